package driver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"
)

// Record is what the plugin persists about one volume, in
// <state root>/volumes/<name>/volume.json (mode 0600: the spec holds keys
// and passwords). Everything runtime-only (processes, mount state) lives in
// the driver's memory and is recomputed after a restart.
type Record struct {
	Name      string         `json:"name"`
	ID        string         `json:"id"` // 16 random lowercase hex characters
	CreatedAt time.Time      `json:"created_at"`
	Spec      Spec           `json:"spec"`
	Mounts    map[string]int `json:"mounts,omitempty"` // mount ID -> count (a multiset)
}

// MountCount is the number of outstanding Mount calls.
func (r *Record) MountCount() int {
	n := 0
	for _, c := range r.Mounts {
		n += c
	}
	return n
}

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// MaxNameLength bounds volume names (they become path components).
const MaxNameLength = 128

// ValidateName applies the local driver's name rules: a letter or digit,
// then letters, digits, '_', '.' or '-'; at least 2 characters; no "..".
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("volume name is empty: give a name such as data1")
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("volume name %q is longer than %d characters: shorten it", name, MaxNameLength)
	}
	if !namePattern.MatchString(name) || name == ".." || containsDotDot(name) {
		return fmt.Errorf("volume name %q is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]+ (no '/', no '..')", name)
	}
	return nil
}

func containsDotDot(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '.' && s[i+1] == '.' {
			return true
		}
	}
	return false
}

// NewID returns a fresh volume id: 16 random lowercase hex characters.
func NewID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random volume id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Store is the on-disk volume state under a root directory.
type Store struct {
	Root string
}

// VolumesDir holds one directory per volume name.
func (s *Store) VolumesDir() string { return filepath.Join(s.Root, "volumes") }

// DataDir is where a volume's stack keeps its files (zdb data and index,
// zstor.toml, sockets); keyed by id so a re-created name never shares it.
func (s *Store) DataDir(id string) string { return filepath.Join(s.Root, "data", id) }

// TombstoneDir is where tombstones are kept.
func (s *Store) TombstoneDir() string { return filepath.Join(s.Root, "tombstones") }

func (s *Store) recordPath(name string) string {
	return filepath.Join(s.VolumesDir(), name, "volume.json")
}

// Init creates the directories of the store with mode 0700.
func (s *Store) Init() error {
	for _, d := range []string{s.Root, s.VolumesDir(), filepath.Join(s.Root, "data"), s.TombstoneDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create state directory %s: %w", d, err)
		}
	}
	return nil
}

// Save writes r atomically (temp file, fsync, rename, directory fsync).
func (s *Store) Save(r *Record) error {
	dir := filepath.Dir(s.recordPath(r.Name))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create volume directory %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode volume %s: %w", r.Name, err)
	}
	return WriteFileAtomic(s.recordPath(r.Name), data, 0o600)
}

// Load reads the record of name; os.ErrNotExist when there is none.
func (s *Store) Load(name string) (*Record, error) {
	data, err := os.ReadFile(s.recordPath(name))
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", s.recordPath(name), err)
	}
	if r.Name != name || r.ID == "" {
		return nil, fmt.Errorf("decode %s: name %q or id %q does not match", s.recordPath(name), r.Name, r.ID)
	}
	return &r, nil
}

// Delete removes the record of name.
func (s *Store) Delete(name string) error {
	if err := os.RemoveAll(filepath.Join(s.VolumesDir(), name)); err != nil {
		return fmt.Errorf("remove volume state %s: %w", name, err)
	}
	return syncDir(s.VolumesDir())
}

// List loads every record, sorted by name. Unreadable records are returned
// as errors next to the good ones.
func (s *Store) List() ([]*Record, []error) {
	entries, err := os.ReadDir(s.VolumesDir())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{fmt.Errorf("list %s: %w", s.VolumesDir(), err)}
	}
	var out []*Record
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		r, err := s.Load(e.Name())
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory: write, fsync, chmod, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Package reaper owns the tombstones of removed volumes and the reaper that
// tears a tombstoned volume down once its uploads have gone quiet.
//
// A tombstone is one JSON file per volume id in a directory, written
// atomically (temp file, fsync, rename, mode 0600). It holds the volume's
// name and id, when it was removed, and the reaper's state for it (last
// upload sample, failure count, whether teardown has been decided), so a
// plugin restart changes nothing about when a volume is reaped.
//
// The package does not know how to read counters or tear a volume down: the
// plugin injects both (netns.ReadCounters and its own teardown of mount,
// processes, namespace, local data and tombstone).
package reaper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/qsfs/qsfs/netns"
)

// Tombstone marks a removed volume that still has to be torn down.
type Tombstone struct {
	Name string    `json:"name"` // volume name at removal
	ID   string    `json:"id"`   // volume id (16 lowercase hex chars)
	Time time.Time `json:"time"` // when the volume was removed

	// Reaper state, persisted so a restart continues where it left off.
	Sampled    bool      `json:"sampled"`          // LastTx/SampleTime hold a sample
	LastTx     uint64    `json:"last_tx_bytes"`    // upload counter (TxBytes) at SampleTime
	SampleTime time.Time `json:"sample_time"`      // when LastTx was read
	Failures   int       `json:"failures"`         // consecutive counter read failures
	Reaping    bool      `json:"reaping"`          // teardown decided; retried until it succeeds
	Reason     string    `json:"reason,omitempty"` // why teardown was decided
}

// Tombstones is a directory of tombstones, one file `<id>.json` each.
type Tombstones struct {
	dir string
}

// OpenTombstones returns the store in dir, creating dir (mode 0700).
func OpenTombstones(dir string) (*Tombstones, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create tombstone dir %s: %w", dir, err)
	}
	return &Tombstones{dir: dir}, nil
}

// Dir returns the store's directory.
func (s *Tombstones) Dir() string { return s.dir }

func (s *Tombstones) path(id string) string { return filepath.Join(s.dir, id+".json") }

// Put writes t atomically, replacing any tombstone of t.ID.
func (s *Tombstones) Put(t Tombstone) error {
	if err := netns.ValidID(t.ID); err != nil {
		return fmt.Errorf("put tombstone: %w", err)
	}
	data, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("encode tombstone %s: %w", t.ID, err)
	}
	if err := writeAtomic(s.path(t.ID), append(data, '\n')); err != nil {
		return fmt.Errorf("write tombstone %s: %w", t.ID, err)
	}
	return nil
}

// Get returns the tombstone of id; the error matches fs.ErrNotExist when
// there is none.
func (s *Tombstones) Get(id string) (Tombstone, error) {
	var t Tombstone
	if err := netns.ValidID(id); err != nil {
		return t, fmt.Errorf("get tombstone: %w", err)
	}
	data, err := os.ReadFile(s.path(id))
	if err != nil {
		return t, fmt.Errorf("read tombstone %s: %w", id, err)
	}
	if err := json.Unmarshal(data, &t); err != nil {
		return t, fmt.Errorf("decode tombstone %s: %w", id, err)
	}
	if t.ID != id {
		return t, fmt.Errorf("tombstone %s holds id %q", id, t.ID)
	}
	return t, nil
}

// Has reports whether id has a tombstone.
func (s *Tombstones) Has(id string) bool {
	_, err := os.Stat(s.path(id))
	return err == nil
}

// Delete removes the tombstone of id; no error when there is none.
func (s *Tombstones) Delete(id string) error {
	if err := netns.ValidID(id); err != nil {
		return fmt.Errorf("delete tombstone: %w", err)
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete tombstone %s: %w", id, err)
	}
	return syncDir(s.dir)
}

// List returns all tombstones, oldest removal first. Unreadable files are
// reported in the error but do not hide the others.
func (s *Tombstones) List() ([]Tombstone, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list tombstones in %s: %w", s.dir, err)
	}
	var out []Tombstone
	var errs []error
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || netns.ValidID(id) != nil {
			continue
		}
		t, err := s.Get(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, errors.Join(errs...)
}

// writeAtomic writes data to path through a temp file in the same
// directory: write, fsync, chmod 0600, rename, fsync the directory.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck // gone after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

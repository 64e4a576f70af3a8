// Package engine runs zstor's operations on objects: store (checksum,
// compress, encrypt, erasure code, place and upload shards, save metadata),
// retrieve, check and rebuild, plus backend status and the connectivity
// test. The CLI runs it in-process and the daemon runs it behind its queue.
//
// It owns the order of the pipeline and its parallelism. It does not own the
// formats (codec, meta), connections (backend), queueing, retries or
// signals (package zstor).
package engine

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/backend"
	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/meta"
)

// ErrNotFound is returned when no metadata exists for a path
// ("no metadata found for file").
var ErrNotFound = errors.New("no metadata found for file")

// Health tells the engine which backends the daemon's monitor considers
// usable. A nil Health treats every backend as usable.
type Health interface {
	Writable(b config.Backend) bool
	Readable(b config.Backend) bool
	Healthy(b config.Backend) bool // reachable at the last probe
}

// Engine performs object operations with one configuration at a time.
// Safe for concurrent use; Reload swaps the configuration atomically for
// operations that start later.
type Engine struct {
	Pool    *backend.Pool
	Health  Health
	Log     *logrus.Entry
	Workers int // CPU parallelism of one operation; 0 = GOMAXPROCS

	mu    sync.RWMutex
	cfg   *config.Config
	store *meta.Store
	key   []byte
}

// New returns an engine for a validated configuration.
func New(cfg *config.Config, log *logrus.Entry) (*Engine, error) {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	e := &Engine{Pool: &backend.Pool{}, Log: log}
	if err := e.Reload(cfg); err != nil {
		return nil, err
	}
	return e, nil
}

// Reload switches to cfg.
func (e *Engine) Reload(cfg *config.Config) error {
	key, err := config.DecodeKey(cfg.Encryption.Key)
	if err != nil {
		return fmt.Errorf("encryption.key: %w", err)
	}
	st, err := meta.NewStore(cfg, e.Pool)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.cfg, e.store, e.key = cfg, st, key
	e.mu.Unlock()
	return nil
}

// Config returns the current configuration (do not modify it).
func (e *Engine) Config() *config.Config {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.cfg
}

// Meta returns the current metadata store.
func (e *Engine) Meta() *meta.Store {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.store
}

func (e *Engine) snapshot() (*config.Config, *meta.Store, []byte) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.cfg, e.store, e.key
}

func (e *Engine) workers() int {
	if e.Workers > 0 {
		return e.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// StorePath returns the path under which a file is stored: the
// filesystem-canonical key directory (or the file's own directory) joined
// with the file name, as the official store does.
func StorePath(file, keyDir string) (string, error) {
	dir := keyDir
	if dir == "" {
		dir = filepath.Dir(file)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("key path %s: %w", dir, err)
	}
	canon, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("key path %s: %w", dir, err)
	}
	return filepath.Join(canon, filepath.Base(file)), nil
}

// LookupPath returns the path a retrieve or check of file refers to
// (absolute, lexically cleaned).
func LookupPath(file string) (string, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return "", fmt.Errorf("path %s: %w", file, err)
	}
	return abs, nil
}

// OutputPath is where a retrieved file is written: below root when the
// path is relative and a root is set.
func OutputPath(cfg *config.Config, file string) string {
	if cfg.Root != "" && !filepath.IsAbs(file) {
		return filepath.Join(cfg.Root, file)
	}
	return file
}

func (e *Engine) writable(b config.Backend) bool { return e.Health == nil || e.Health.Writable(b) }
func (e *Engine) healthy(b config.Backend) bool  { return e.Health == nil || e.Health.Healthy(b) }

// inConfig reports whether b is one of cfg's data backends.
func inConfig(cfg *config.Config, b config.Backend) bool {
	for _, g := range cfg.Groups {
		for _, x := range g.Backends {
			if meta.SameBackend(x, b) {
				return true
			}
		}
	}
	return false
}

// InConfig reports whether b is one of cfg's data backends.
func (e *Engine) InConfig(cfg *config.Config, b config.Backend) bool { return inConfig(cfg, b) }

// MarkReplaced records b as replaced in the metadata store, under the
// official key /{prefix}/replaced_backends/{hex(b2(address‖ns‖password))}.
func (e *Engine) MarkReplaced(b config.Backend) error {
	st := e.Meta()
	addr := b.Address
	if ap, err := config.ParseAddress(b.Address); err == nil {
		addr = ap.String()
	}
	sum := codec.Sum([]byte(addr + b.NamespaceName() + b.PasswordValue()))
	return st.Set("/"+st.Prefix+"/replaced_backends/"+hex.EncodeToString(sum[:]), nil)
}

// FileChecksum returns the BLAKE2b-128 of a local file.
func FileChecksum(path string) (codec.Checksum, error) {
	var sum codec.Checksum
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := codec.NewHash()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("read %s: %w", path, err)
	}
	h.Sum(sum[:0])
	return sum, nil
}

package zdb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

const defaultNamespace = "default"

// Store is the set of namespaces under the index and data roots.
type Store struct {
	opts  Options
	log   *logrus.Entry
	hooks *hookRunner

	mu  sync.RWMutex
	nss map[string]*Namespace

	locks []*os.File
	stats storeStats
}

type storeStats struct {
	indexRead, indexWrite, dataRead, dataWrite atomic.Int64
	indexReadFailed, indexWriteFailed          atomic.Int64
	dataReadFailed, dataWriteFailed            atomic.Int64
	cmdExecuted, cmdFailed, cmdUnauthorized    atomic.Int64
	netRx, netTx                               atomic.Int64
	clientsLifetime                            atomic.Int64
}

// openStore locks the roots and loads every namespace found in them.
func openStore(opts Options, log *logrus.Entry, hooks *hookRunner) (*Store, error) {
	s := &Store{opts: opts, log: log, hooks: hooks, nss: make(map[string]*Namespace)}
	roots := []string{opts.IndexPath, opts.DataPath}
	if sameDir(opts.IndexPath, opts.DataPath) {
		// official accepts one directory for both; lock it once
		roots = roots[:1]
	}
	for _, dir := range roots {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create directory %s: %w", dir, err)
		}
		lf, err := os.OpenFile(filepath.Join(dir, ".lockfile"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open lock file in %s: %w", dir, err)
		}
		if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			lf.Close()
			s.Close()
			return nil, fmt.Errorf("lock %s (another zdb running?): %w", dir, err)
		}
		s.locks = append(s.locks, lf)
	}
	hooks.run("namespaces-init", true, opts.IndexPath, opts.DataPath)

	names := []string{defaultNamespace}
	ents, err := os.ReadDir(opts.IndexPath)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("list index root %s: %w", opts.IndexPath, err)
	}
	for _, e := range ents {
		if e.IsDir() && e.Name() != defaultNamespace {
			names = append(names, e.Name())
		}
	}
	for _, name := range names {
		ns := s.newNamespace(name)
		if name == defaultNamespace {
			ns.desc.maxsize = opts.MaxSize
			if opts.Protect {
				ns.desc.password = opts.Admin
			}
		}
		if err := ns.load(); err != nil {
			s.Close()
			return nil, fmt.Errorf("load namespace %s: %w", name, err)
		}
		if name == defaultNamespace {
			// the command line rules the default namespace
			ns.desc.maxsize = opts.MaxSize
			ns.desc.public = true
			ns.desc.password = ""
			if opts.Protect {
				ns.desc.password = opts.Admin
			}
		}
		s.nss[name] = ns
		log.WithFields(logrus.Fields{"ns": name, "entries": ns.entries, "mode": ns.modeName()}).Debug("namespace loaded")
	}
	// loading read whole index files; give that memory back now
	debug.FreeOSMemory()
	return s, nil
}

// sameDir reports whether a and b name the same directory (they may not
// exist yet).
func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

func (s *Store) newNamespace(name string) *Namespace {
	mode := uint8(modeUser)
	if s.opts.Mode == modeSeq {
		mode = modeSeq
	}
	return &Namespace{
		name:  name,
		store: s,
		// paths are built as official does, so hooks see them exactly as
		// configured (relative ones stay relative, "./zdb-index/ns/i0")
		idxDir: strings.TrimSuffix(s.opts.IndexPath, "/") + "/" + name,
		datDir: strings.TrimSuffix(s.opts.DataPath, "/") + "/" + name,
		desc:   nsDescriptor{name: name, public: true},
		mode:   mode,
		files:  make(map[fileKey]*os.File),
	}
}

// Get returns a namespace by name.
func (s *Store) Get(name string) *Namespace {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nss[name]
}

// Names returns the namespace names, default first then sorted.
func (s *Store) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.nss))
	for n := range s.nss {
		if n != defaultNamespace {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return append([]string{defaultNamespace}, names...)
}

// All returns every namespace.
func (s *Store) All() []*Namespace {
	var out []*Namespace
	for _, n := range s.Names() {
		if ns := s.Get(n); ns != nil {
			out = append(out, ns)
		}
	}
	return out
}

var (
	errNameNotAllowed = errReply("This name is not allowed")
	errNSUnavailable  = errReply("This namespace is not available")
)

func validNamespaceName(name string) bool {
	return name != "" && name != "." && name != ".." && name != defaultNamespace && !strings.Contains(name, "/")
}

// Create makes a new namespace.
func (s *Store) Create(name string) error {
	if !validNamespaceName(name) {
		return errNameNotAllowed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nss[name] != nil {
		return errNSUnavailable
	}
	ns := s.newNamespace(name)
	if err := ns.load(); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	s.nss[name] = ns
	s.hooks.run("namespace-created", false, name)
	return nil
}

// Delete removes a namespace and its files.
func (s *Store) Delete(ns *Namespace) error {
	s.mu.Lock()
	if s.nss[ns.name] != ns {
		s.mu.Unlock()
		return errors.New("namespace already removed")
	}
	delete(s.nss, ns.name)
	s.mu.Unlock()
	ns.mu.Lock()
	ns.removed.Store(true)
	ns.closeFiles()
	err1 := os.RemoveAll(ns.idxDir)
	err2 := os.RemoveAll(ns.datDir)
	ns.mu.Unlock()
	s.hooks.run("namespace-deleted", false, ns.name)
	return errors.Join(err1, err2)
}

// Close closes every namespace's files and releases the root locks.
func (s *Store) Close() {
	s.mu.Lock()
	for _, ns := range s.nss {
		ns.mu.Lock()
		if ns.datW != nil {
			ns.datW.Sync()
			ns.idxW.Sync()
		}
		ns.closeFiles()
		ns.mu.Unlock()
	}
	s.mu.Unlock()
	for _, l := range s.locks {
		l.Close()
	}
	s.locks = nil
}

package zstor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/proto"
)

// rescanEvent is the internal hook event run by the detached child that the
// ready hook starts. It is not a zdb event.
const rescanEvent = "qsfs-rescan"

// rescanDaemonWait is how long the rescan waits for the daemon's socket.
const rescanDaemonWait = 60 * time.Second

// startRescan starts `qsfs hook qsfs-rescan <id>` detached (own session,
// no inherited output pipes), so that zdb's ready hook returns at once.
func startRescan(id string, log *logrus.Entry) {
	if os.Getenv(EnvConfig) == "" {
		return // nothing to archive to
	}
	if !invokedAsHook() {
		return // e.g. HookMain called from a test binary: do not re-exec it
	}
	exe, err := os.Executable()
	if err != nil {
		log.WithError(err).Warn("rescan not started: own executable unknown")
		return
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		log.WithError(err).Warn("rescan not started")
		return
	}
	defer devnull.Close()
	cmd := exec.Command(exe, "hook", rescanEvent, id)
	cmd.Args[0] = "qsfs" // dispatch on "hook", whatever the binary is named
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		log.WithError(err).Warn("rescan not started")
		return
	}
	log.WithField("pid", cmd.Process.Pid).Debug("rescan started")
	cmd.Process.Release()
}

// invokedAsHook reports whether this process is the qsfs binary running
// the hook (`hook` symlink or `qsfs hook`), so re-executing it is safe.
func invokedAsHook() bool {
	return filepath.Base(os.Args[0]) == "hook" || (len(os.Args) > 1 && os.Args[1] == "hook")
}

// rescan queues a background store for every closed file of every archived
// namespace that is not stored, or stored with another checksum: all data
// files d<N> but the highest, all index files i<N> but the highest, and
// zdb-namespace. It covers files that were queued in a daemon that stopped
// before trying them (only failed uploads are recorded and re-queued). The
// current files are stored by namespace-closing.
//
// With a socket in the config, it waits for the daemon, gives up without
// one and never falls back to in-process commands (no long uploads behind
// the stack's back when the daemon stops during the scan).
func (h *hookEnv) rescan() error {
	if h.cfg.Socket != "" {
		h.daemonOnly = true
		deadline := time.Now().Add(rescanDaemonWait)
		for {
			c, err := dialDaemon(h.cfg.Socket)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("rescan: no daemon: %w", err)
			}
			time.Sleep(time.Second)
		}
	}
	entries, err := os.ReadDir(h.indexDir)
	if err != nil {
		return fmt.Errorf("rescan index dir %s: %w", h.indexDir, err)
	}
	var errs []error
	queued := 0
	for _, e := range entries {
		ns := e.Name()
		if !e.IsDir() || ns == tempNamespace || strings.HasPrefix(ns, ".") {
			continue
		}
		n, err := h.rescanNamespace(ns)
		queued += n
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace %s: %w", ns, err))
		}
	}
	h.log.WithField("queued", queued).Info("rescan of closed files done")
	return errors.Join(errs...)
}

// closedFiles returns the names prefix<N> in dir except the highest N, in
// ascending order of N.
func closedFiles(dir, prefix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var ids []int
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(e.Name(), prefix))
		if err != nil || n < 0 {
			continue
		}
		ids = append(ids, n)
	}
	sort.Ints(ids)
	var out []string
	for _, n := range ids[:max(len(ids)-1, 0)] {
		out = append(out, prefix+strconv.Itoa(n))
	}
	return out, nil
}

// rescanNamespace queues the namespace's unstored closed files and returns
// how many it queued.
func (h *hookEnv) rescanNamespace(ns string) (int, error) {
	idxDir := filepath.Join(h.indexDir, ns)
	dataDir := filepath.Join(h.dataDir, ns)
	var errs []error
	queued := 0

	data, err := closedFiles(dataDir, "d")
	errs = append(errs, err)
	for _, n := range data {
		p := filepath.Join(dataDir, n)
		if !h.needsStore(p) {
			continue
		}
		if err := h.store(p, "", false); err != nil {
			errs = append(errs, err)
			continue
		}
		queued++
	}

	// Index files are mutable: upload copies, as jump-index does.
	index, err := closedFiles(idxDir, "i")
	errs = append(errs, err)
	var todo []string
	for _, n := range append([]string{"zdb-namespace"}, index...) {
		if h.needsStore(filepath.Join(idxDir, n)) {
			todo = append(todo, n)
		}
	}
	if len(todo) > 0 {
		n, err := h.storeIndexCopies(idxDir, todo)
		queued += n
		errs = append(errs, err)
	}
	return queued, errors.Join(errs...)
}

// storeIndexCopies copies the index files names of idxDir into a new hook
// copy dir and queues a store of each copy (key as if in idxDir, deleted
// once stored). Every copy is made before the first store is queued: the
// daemon (or the in-process store) deletes each copy once stored and the
// dir once it is empty, so a copy made after a store could find its dir
// gone, and the file would never be archived.
func (h *hookEnv) storeIndexCopies(idxDir string, names []string) (int, error) {
	tmp, err := os.MkdirTemp("", hookTmpPrefix)
	if err != nil {
		return 0, fmt.Errorf("index copies of %s: %w", idxDir, err)
	}
	var errs []error
	var copied []string
	for _, n := range names {
		src := filepath.Join(idxDir, n)
		if err := copyFile(src, filepath.Join(tmp, n)); err != nil {
			if !sourceGone(err, src) {
				errs = append(errs, err)
			}
			os.Remove(filepath.Join(tmp, n))
			continue
		}
		copied = append(copied, n)
	}
	queued := 0
	for _, n := range copied {
		if err := h.store(filepath.Join(tmp, n), idxDir, true); err != nil {
			errs = append(errs, err)
			continue
		}
		queued++
	}
	if queued == 0 {
		// Nothing queued: nobody else removes the dir (copies whose store
		// failed stay for inspection, as jump-index leaves them).
		os.Remove(tmp)
	}
	return queued, errors.Join(errs...)
}

// sourceGone reports whether err of copyFile(src, ...) means that src no
// longer exists (and not that the copy's directory is missing).
func sourceGone(err error, src string) bool {
	if !errors.Is(err, os.ErrNotExist) {
		return false
	}
	_, serr := os.Stat(src)
	return errors.Is(serr, os.ErrNotExist)
}

// needsStore reports whether the local file p is not stored under its key
// or stored with another checksum. A file that is gone (evicted) needs
// nothing; a failed check means store (an unchanged file is skipped by the
// store itself).
func (h *hookEnv) needsStore(p string) bool {
	local, err := engine.FileChecksum(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			h.log.WithError(err).WithField("file", p).Warn("rescan: cannot read file")
		}
		return false
	}
	stored, err := h.check(p)
	if err != nil {
		h.log.WithError(err).WithField("file", p).Warn("rescan: check failed, queueing a store")
		return true
	}
	if stored != nil && bytes.Equal(stored, local[:]) {
		return false
	}
	h.log.WithFields(logrus.Fields{"file": p, "stored": stored != nil}).Info("rescan: closed file not archived, queueing a store")
	return true
}

// check returns the stored checksum of file, nil when it is not stored.
func (h *hookEnv) check(file string) ([]byte, error) {
	r, err := h.do(&proto.Command{Kind: proto.Check, File: file})
	if err != nil {
		return nil, err
	}
	if r.Kind == proto.Checksum {
		return r.Checksum[:], nil
	}
	return nil, nil
}

package driver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/qsfs/qsfs/zdb/client"
)

// Programs are the argv prefixes of the three stack programs: the binary's
// own subcommands by default ([self, "zdb"]), or official binaries ([path]).
type Programs struct {
	Zdb, Zdbfs, Zstor, Hook []string
}

// zdbfs namespace names (fixed in 0-db-fs 0.1.11).
var zdbfsNamespaces = []string{"zdbfs-meta", "zdbfs-data", "zdbfs-temp"}

// Stack is one volume's running parts: its network, zstor (archived
// volumes), zdb and zdbfs. The base (network + zstor) can stay up while the
// filesystem (zdb + zdbfs) is down, so uploads finish after the last
// container stopped. A Stack is used under its volume's lock only.
type Stack struct {
	d          *Driver
	name, id   string
	spec       Spec
	dir        string // data directory, keyed by id
	mountpoint string
	log        *logrus.Entry

	net         *Network
	metricsPort uint16
	zstor       *Process
	zdb         *Process
	zdbfs       *Process
	zstorNote   string     // why zstor does not run although backends are set
	newDir      bool       // this stack created the data directory
	viewMu      sync.Mutex // guards the fields above for Status readers
}

func (d *Driver) newStack(rec *Record) *Stack {
	return &Stack{
		d: d, name: rec.Name, id: rec.ID, spec: rec.Spec,
		dir:        d.store.DataDir(rec.ID),
		mountpoint: d.Mountpoint(rec.Name),
		log:        d.log.WithFields(logrus.Fields{"volume": rec.Name, "id": rec.ID}),
	}
}

func (s *Stack) lock(f func()) {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	f()
}

func (s *Stack) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// BaseUp reports whether the network (and zstor, if any) is up.
func (s *Stack) BaseUp() bool { return s.net != nil }

// FSUp reports whether zdb and zdbfs run.
func (s *Stack) FSUp() bool { return s.zdbfs != nil }

// ZstorRunning reports whether zstor is part of the stack.
func (s *Stack) ZstorRunning() bool { return s.zstor != nil }

// startBase brings up the network and, for an archived volume, zstor.
func (s *Stack) startBase(deadline time.Time) error {
	if s.net != nil {
		return nil
	}
	if _, err := os.Stat(s.dir); errors.Is(err, os.ErrNotExist) {
		s.newDir = true
	} else {
		// Nothing of this volume runs in this plugin instance; anything
		// that still uses its data directory is left from a previous one
		// (host mode) and must not run next to the new stack.
		killStale(s.dir, s.log)
	}
	for _, d := range []string{s.dir, s.path("zdb", "data"), s.path("zdb", "index")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	withZstor := s.spec.Archived() && s.d.zstorWorks()
	s.lock(func() { s.zstorNote = "" })
	if s.spec.Archived() && !withZstor {
		s.lock(func() { s.zstorNote = "zstor is not available: data stays local until it is" })
		s.log.Warn(s.zstorNote)
	}
	var backends []string
	var port uint16
	if withZstor {
		backends = s.spec.BackendAddrs()
		port = s.d.cfg.ZstorMetricsPort
		if !s.d.iso.Enabled() {
			p, err := freePort()
			if err != nil {
				return err
			}
			port = p
		}
	}
	nw, err := s.d.iso.Setup(s.id, backends, port)
	if err != nil {
		return fmt.Errorf("network of volume %s: %w", s.name, err)
	}
	s.lock(func() { s.net, s.metricsPort = nw, port })
	if !withZstor {
		return nil
	}
	if err := s.writeZstorConfig(); err != nil {
		return err
	}
	sock := s.path("zstor.sock")
	_ = os.Remove(sock)
	args := append(append([]string{}, s.d.cfg.Programs.Zstor[1:]...),
		"--log_file", s.path("zstor.log"), "-c", s.path("zstor.toml"), "monitor")
	p := newProcess("zstor", s.log, func() *exec.Cmd {
		return s.command(s.d.cfg.Programs.Zstor[0], args...)
	})
	p.beforeRun = func() { _ = os.Remove(sock) }
	if err := p.Start(); err != nil {
		return err
	}
	s.lock(func() { s.zstor = p })
	if err := waitSocket(sock, p, deadline); err != nil {
		return fmt.Errorf("zstor did not start: %w%s", err, lastLines(p))
	}
	return nil
}

// writeZstorConfig writes zstor.toml (mode 0600) for this stack.
func (s *Stack) writeZstorConfig() error {
	c := s.spec.Zstor(Runtime{
		Prefix: DefaultMetaPrefix(s.id),
		// Keys are the file paths relative to the zdb directory, so the
		// same config restores the volume under any state root or host.
		Root:           s.path("zdb"),
		Socket:         s.path("zstor.sock"),
		PidFile:        s.path("zstor.pid"),
		ZdbDataDirPath: s.path("zdb", "data", "zdbfs-data"),
		PrometheusPort: s.metricsPort,
	})
	data, err := c.Encode()
	if err != nil {
		return err
	}
	return WriteFileAtomic(s.path("zstor.toml"), data, 0o600)
}

func (s *Stack) command(prog string, args ...string) *exec.Cmd {
	cmd := s.d.iso.Command(s.net, prog, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
		// The zdb hook (`qsfs hook`) reads these; zdb passes its
		// environment to hooks unchanged.
		"QSFS_ZSTOR_CONFIG="+s.path("zstor.toml"),
		"QSFS_ZDB_INDEX="+s.path("zdb", "index"),
		"QSFS_ZDB_DATA="+s.path("zdb", "data"),
		"QSFS_HOOK_LOG="+s.path("hook.log"),
		"QSFS_VOLUME="+s.name,
		"QSFS_VOLUME_ID="+s.id,
	)
	if len(s.d.cfg.Programs.Zstor) > 0 {
		cmd.Env = append(cmd.Env, "QSFS_ZSTOR="+strings.Join(s.d.cfg.Programs.Zstor, " "))
	}
	return cmd
}

// hookPath returns the program zdb runs as --hook: a symlink named "hook"
// to the qsfs binary (it dispatches on its name), or the configured hook.
func (s *Stack) hookPath() (string, error) {
	h := s.d.cfg.Programs.Hook
	if len(h) == 1 {
		return h[0], nil
	}
	link := s.path("hook")
	_ = os.Remove(link)
	if err := os.Symlink(s.d.cfg.Self, link); err != nil {
		return "", fmt.Errorf("hook link %s: %w", link, err)
	}
	return link, nil
}

// startFS starts zdb and zdbfs and waits for the FUSE mount.
func (s *Stack) startFS(deadline time.Time) error {
	if s.zdbfs != nil {
		return nil
	}
	if err := os.MkdirAll(s.mountpoint, 0o755); err != nil {
		return fmt.Errorf("create mountpoint %s: %w", s.mountpoint, err)
	}
	s.detachStale()
	sock := s.path("zdb.sock")
	_ = os.Remove(sock)
	args := append(append([]string{}, s.d.cfg.Programs.Zdb[1:]...),
		"--mode", "seq", "--data", s.path("zdb", "data"), "--index", s.path("zdb", "index"),
		"--socket", sock, "--datasize", strconv.Itoa(s.d.cfg.ZdbDataSize))
	if r := time.Duration(s.spec.Rotate); r > 0 {
		args = append(args, "--rotate", strconv.Itoa(int(r/time.Second)))
	}
	if s.zstor != nil {
		hook, err := s.hookPath()
		if err != nil {
			return err
		}
		args = append(args, "--hook", hook)
	}
	zdb := newProcess("zdb", s.log, func() *exec.Cmd { return s.command(s.d.cfg.Programs.Zdb[0], args...) })
	zdb.beforeRun = func() { _ = os.Remove(sock) } // a killed zdb leaves its socket
	if err := zdb.Start(); err != nil {
		return err
	}
	s.lock(func() { s.zdb = zdb })
	if err := waitZdb(sock, zdb, deadline); err != nil {
		return fmt.Errorf("zdb did not start: %w%s", err, lastLines(zdb))
	}
	// autons only while the namespaces are missing (decided at each
	// start): 0-db-fs 0.1.11 aborts when autons finds them.
	fs := newProcess("zdbfs", s.log, func() *exec.Cmd {
		opts := []string{"unix=" + sock, "allow_other", "size=" + strconv.FormatUint(s.spec.Cache, 10)}
		if u := s.d.cfg.ZdbfsURing; u != "" && u != "auto" {
			opts = append(opts, "uring="+u)
		}
		if !namespacesExist(sock) {
			opts = append(opts, "autons")
		}
		args := append(append([]string{}, s.d.cfg.Programs.Zdbfs[1:]...), "-o", strings.Join(opts, ","), s.mountpoint)
		return s.command(s.d.cfg.Programs.Zdbfs[0], args...)
	})
	fs.beforeRun = s.detachStale
	if err := fs.Start(); err != nil {
		return err
	}
	s.lock(func() { s.zdbfs = fs })
	if err := s.waitMounted(fs, deadline); err != nil {
		return err
	}
	return nil
}

// waitMounted polls mountinfo until a fuse.zdbfs mount is live at the
// mountpoint, failing early when zdbfs exits.
func (s *Stack) waitMounted(fs *Process, deadline time.Time) error {
	var t string
	err := poll(fs, deadline, func() (bool, error) {
		var err error
		t, err = MountedFS(s.d.cfg.Mountinfo, s.mountpoint)
		return t == "fuse.zdbfs", err
	})
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("zdbfs exited (%s) before %s was mounted%s", fs.Status().LastExit, s.mountpoint, lastLines(fs))
	case errors.Is(err, errTimeout) && t != "":
		return fmt.Errorf("timed out waiting for fuse.zdbfs at %s (found %s)%s", s.mountpoint, t, lastLines(fs))
	case errors.Is(err, errTimeout):
		return fmt.Errorf("timed out waiting for fuse.zdbfs at %s%s", s.mountpoint, lastLines(fs))
	}
	return err
}

// detachStale lazily unmounts whatever is left at the mountpoint (a FUSE
// mount of a dead zdbfs answers ENOTCONN).
func (s *Stack) detachStale() {
	for i := 0; i < 4; i++ {
		t, err := MountedFS(s.d.cfg.Mountinfo, s.mountpoint)
		if err != nil || t == "" {
			return
		}
		s.log.WithField("fstype", t).Warn("detaching stale mount")
		if err := unix.Unmount(s.mountpoint, unix.MNT_DETACH); err != nil {
			s.log.WithError(err).Warn("detach stale mount")
			return
		}
	}
}

// stopFS unmounts the filesystem (zdbfs flushes and exits), then stops zdb
// with SIGTERM so its close hooks queue the last uploads, each within the
// stop timeout.
func (s *Stack) stopFS() error { return s.stopFSWithin(s.d.cfg.StopTimeout) }

// stopFSWithin is stopFS with a time budget per step. When a running
// container still holds the mount in its own mount namespace, zdbfs does not
// exit after the unmount: after a short wait it gets SIGTERM (it writes its
// cache back) and, at the end of the budget, SIGKILL.
func (s *Stack) stopFSWithin(budget time.Duration) error {
	var errs []error
	if s.zdbfs != nil {
		s.zdbfs.markStopping()
		if err := unmountRetry(s.mountpoint); err != nil {
			errs = append(errs, err)
		}
		grace := budget / 8
		if grace > 5*time.Second {
			grace = 5 * time.Second
		}
		s.zdbfs.Shutdown(grace, budget-grace)
		s.lock(func() { s.zdbfs = nil })
		s.detachStale()
		if err := os.Remove(s.mountpoint); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.WithError(err).Debug("remove mountpoint")
		}
	}
	if s.zdb != nil {
		pgid := s.zdb.Status().Pid // zdb leads its process group; its hooks are in it
		s.zdb.Stop(syscall.SIGTERM, budget)
		s.lock(func() { s.zdb = nil })
		if pgid > 0 && !waitGroupGone(pgid, budget) {
			s.log.Warn("zdb hook processes still run after the stop timeout")
		}
	}
	return errors.Join(errs...)
}

// stopBase stops zstor (it drains its queue on SIGTERM, up to drain) and
// removes the network when teardown is set.
func (s *Stack) stopBase(drain time.Duration, teardown bool) error {
	if s.zstor != nil {
		s.zstor.Stop(syscall.SIGTERM, drain)
		s.lock(func() { s.zstor = nil })
	}
	s.lock(func() { s.net = nil })
	if teardown {
		if err := s.d.iso.Teardown(s.id); err != nil {
			return fmt.Errorf("tear down network of volume %s: %w", s.name, err)
		}
	}
	return nil
}

// stopAll stops everything and removes the network, the mountpoint and a
// data directory this stack created: a failed Mount leaves nothing behind.
func (s *Stack) stopAll() error {
	err := errors.Join(s.stopFS(), s.stopBase(s.d.cfg.StopTimeout, true))
	if t, _ := MountedFS(s.d.cfg.Mountinfo, s.mountpoint); t == "" {
		_ = os.Remove(s.mountpoint)
	}
	if s.newDir {
		if rerr := os.RemoveAll(s.dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", s.dir, rerr))
		}
	}
	return err
}

func unmountRetry(path string) error {
	var err error
	for i := 0; i < 20; i++ {
		err = unix.Unmount(path, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err2 := unix.Unmount(path, unix.MNT_DETACH); err2 == nil || errors.Is(err2, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// Shutdown waits up to grace for the process to end by itself, then stops
// it with SIGTERM, and SIGKILL after term.
func (p *Process) Shutdown(grace, term time.Duration) {
	p.markStopping()
	exited := p.Exited()
	select {
	case <-exited:
	case <-time.After(grace):
	}
	p.Stop(syscall.SIGTERM, term)
}

// markStopping ends supervision: the process is not restarted when it
// exits from now on.
func (p *Process) markStopping() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopping {
		p.stopping = true
		close(p.wake)
	}
}

func lastLines(p *Process) string {
	t := p.Tail(10)
	if t == "" {
		return ""
	}
	return "; last output of " + p.Name + ":\n" + t
}

// waitSocket waits until a unix socket accepts connections.
func waitSocket(path string, p *Process, deadline time.Time) error {
	err := poll(p, deadline, func() (bool, error) {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("%s exited (%s)", p.Name, p.Status().LastExit)
	case errors.Is(err, errTimeout):
		return fmt.Errorf("timed out waiting for %s", path)
	}
	return err
}

// waitZdb waits until zdb answers PING on its socket.
func waitZdb(sock string, p *Process, deadline time.Time) error {
	err := poll(p, deadline, func() (bool, error) {
		c, err := client.Dial("unix", sock, time.Second)
		if err != nil {
			return false, nil
		}
		defer c.Close()
		return c.Ping() == nil, nil
	})
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("zdb exited (%s)", p.Status().LastExit)
	case errors.Is(err, errTimeout):
		return fmt.Errorf("timed out waiting for zdb on %s", sock)
	}
	return err
}

var (
	errExited  = errors.New("process exited")
	errTimeout = errors.New("timed out")
)

// poll runs ready until it reports true or fails, at first every 2 ms and
// then backing off to every 50 ms (a stack comes up in tens of
// milliseconds: a fixed 50-100 ms poll added most of that again to every
// mount). It returns errExited when p exits first, errTimeout after
// deadline.
func poll(p *Process, deadline time.Time, ready func() (bool, error)) error {
	wait := 2 * time.Millisecond
	for {
		ok, err := ready()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-p.Exited():
			return errExited
		case <-time.After(wait):
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// namespacesExist reports whether zdbfs's namespaces are there already, so
// zdbfs runs without autons (0-db-fs 0.1.11 aborts when autons finds them).
func namespacesExist(sock string) bool {
	c, err := client.Dial("unix", sock, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	for _, ns := range zdbfsNamespaces {
		if _, err := c.NSInfo(ns); err != nil {
			return false
		}
	}
	return true
}

func freePort() (uint16, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}

// DataSize returns the bytes stored under the stack's data directory.
func DataSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Package zdbfs is `qsfs zdbfs`, a FUSE filesystem compatible with 0-db-fs
// 0.1.11: it keeps every inode, directory list and 128 KiB data block in the
// three sequential namespaces zdbfs-meta, zdbfs-data and zdbfs-temp of a
// 0-db server, with the same value layouts (package layout), so that either
// implementation reads what the other wrote.
//
// It owns the command line, the connection pools to zdb (through
// zdb/client only), the in-memory inode, directory and block caches, the
// ordered write-back to zdb and the FUSE operations (go-fuse raw API). It
// does not own zdb itself, nor the namespaces' lifecycle beyond -o autons.
//
// Caching and errors: names, attributes and data are cached by the kernel
// (writeback cache, 5 s entry/attr timeouts) and by zdbfs within the
// cachesize budget; fsync and unmount write everything to zdb. Backend
// errors become EIO, or ENOSPC when zdb reports a full namespace.
package zdbfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Version is reported by -V.
const Version = "0.1.11-qsfs"

const usage = `usage: qsfs zdbfs [-o opt[,opt...]]... <mountpoint>

zdb:        host= port= unix=  (all namespaces)
            mh= mp= mu= ms=    (metadata)   dh= dp= du= ds= (data)
            th= tp= tu= ts=    (temporary)
filesystem: size=<bytes[kMGT]> cachesize=<128 KiB blocks> nocache autons
            background logfile=<path> debug
fuse:       allow_other auto_unmount ro default_permissions nosuid nodev ...
`

// readyEnv names the descriptor a background child reports readiness on.
const readyEnv = "QSFS_ZDBFS_READY_FD"

// watchEnv starts the auto_unmount watchdog instead of a filesystem.
const watchEnv = "QSFS_ZDBFS_WATCH"

// Main runs `qsfs zdbfs` with args and returns the exit status.
func Main(args []string) int {
	if os.Getenv(watchEnv) != "" && len(args) == 1 {
		return watch(args[0])
	}
	if fd, err := strconv.Atoi(os.Getenv(readyEnv)); err == nil {
		syscall.CloseOnExec(fd) // fusermount must not keep the ready pipe open
	}
	o, err := ParseOptions(args)
	switch {
	case errors.Is(err, errHelp):
		fmt.Print(usage)
		return 0
	case errors.Is(err, errVersion):
		fmt.Println("zdbfs", Version)
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: %v\n%s", err, usage)
		return 1
	}
	if o.Backgrnd && os.Getenv(readyEnv) == "" {
		return background(args, o)
	}
	logger := logrus.New()
	logger.SetOutput(os.Stdout)
	if o.Logfile != "" {
		f, err := os.OpenFile(o.Logfile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "qsfs zdbfs: open logfile %q: %v\n", o.Logfile, err)
			return 1
		}
		defer f.Close()
		logger.SetOutput(f)
	}
	if o.Debug {
		logger.SetLevel(logrus.DebugLevel)
	}
	log := logger.WithField("mountpoint", o.Mountpoint)
	for _, w := range o.Warnings {
		log.Warn(w)
	}
	if path := os.Getenv("QSFS_ZDBFS_CPUPROFILE"); path != "" {
		// developer aid: profile the whole run
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(o, log); err != nil {
		log.Errorf("zdbfs: %v", err)
		return 1
	}
	return 0
}

// background re-executes zdbfs detached and returns once the mount is live.
func background(args []string, o *Options) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"zdbfs"}, args...)...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.Logfile == "" {
		cmd.Stdout, cmd.Stderr = nil, nil
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: start background process: %v\n", err)
		return 1
	}
	w.Close()
	msg, _ := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if msg != "ok\n" {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: background process failed to mount %s%s\n", o.Mountpoint, msg)
		return 1
	}
	return 0
}

func notifyReady(failure error) {
	fd, err := strconv.Atoi(os.Getenv(readyEnv))
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if failure != nil {
		fmt.Fprintf(f, ": %v\n", failure)
	} else {
		f.WriteString("ok\n")
	}
	f.Close()
	os.Unsetenv(readyEnv)
}

func run(o *Options, log *logrus.Entry) (err error) {
	defer func() {
		if err != nil {
			notifyReady(err)
		}
	}()
	if abs, err := filepath.Abs(o.Mountpoint); err == nil {
		o.Mountpoint = abs
	}
	b, size, err := openBackends(o, log)
	if err != nil {
		return err
	}
	fs := newFS(o, b, size, log)
	// keep the heap near the cache budget plus request buffers
	debug.SetMemoryLimit(fs.budget + 96<<20)
	if _, e := fs.node(rootIno); e != 0 {
		return fmt.Errorf("load root directory: %w", e)
	}
	fs.nodes[rootIno].lookups = 1 << 62 // the kernel never forgets the root

	mo := &fuse.MountOptions{
		Name:                 "zdbfs",
		FsName:               "zdbfs",
		AllowOther:           o.AllowOther,
		MaxWrite:             1 << 20,
		MaxReadAhead:         1 << 20,
		MaxBackground:        16,
		EnableSymlinkCaching: true,
		DisableXAttrs:        false,
		Debug:                o.Debug,
		DirectMount:          os.Geteuid() == 0,
		ExtraCapabilities:    fuse.CAP_PARALLEL_DIROPS | fuse.CAP_IOCTL_DIR,
	}
	if !o.NoCache {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	if o.DefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if o.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	if o.AutoUnmount && !mo.DirectMount {
		mo.Options = append(mo.Options, "auto_unmount")
	}
	mo.Options = append(mo.Options, o.FuseOptions...)
	srv, err := fuse.NewServer(fs, o.Mountpoint, mo)
	if err != nil {
		return fmt.Errorf("mount %q: %w", o.Mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("mount %q: %w", o.Mountpoint, err)
	}
	tuneReadahead(o.Mountpoint, log)
	if o.AutoUnmount && mo.DirectMount {
		w, err := startWatchdog(o.Mountpoint)
		if err != nil {
			log.Warnf("auto_unmount: %v", err)
		} else {
			defer w.Close() // kept open until zdbfs is done
		}
	}
	log.WithField("size", size).Info("mounted")
	notifyReady(nil)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	var stopping atomic.Bool
	go func() {
		s := <-sig
		stopping.Store(true)
		log.WithField("signal", s.String()).Info("unmounting")
		for i := 0; i < 50; i++ {
			if err := srv.Unmount(); err == nil {
				return
			} else if i == 0 {
				log.Warnf("unmount: %v; retrying", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		log.Warn("mountpoint busy: detaching it")
		syscall.Unmount(o.Mountpoint, syscall.MNT_DETACH)
	}()

	stop := make(chan struct{})
	go fs.background(stop)
	srv.Wait()
	close(stop)
	return fs.shutdown()
}

// background writes dirty state back every two seconds.
func (fs *FS) background(stop <-chan struct{}) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := fs.flush(); err != nil {
				fs.log.Warnf("write-back: %v", err)
			}
			fs.sweep()
		}
	}
}

// sweep forgets clean inodes the kernel no longer references. It holds
// flushMu so that no inode is in the middle of being written back.
func (fs *FS) sweep() {
	fs.flushMu.Lock()
	defer fs.flushMu.Unlock()
	fs.nodesMu.Lock()
	if len(fs.nodes) < 100000 {
		fs.nodesMu.Unlock()
		return
	}
	cand := make([]*node, 0, len(fs.nodes))
	for _, n := range fs.nodes {
		if n.lookups == 0 {
			cand = append(cand, n)
		}
	}
	fs.nodesMu.Unlock()
	for _, n := range cand {
		n.mu.Lock()
		busy := n.opens > 0 || n.flushing > 0 || len(n.cache) > 0 || len(n.inflight) > 0
		n.mu.Unlock()
		fs.dirtyMu.Lock()
		_, d1 := fs.dirtyMeta[n]
		_, d2 := fs.dirtyDirs[n]
		_, d3 := fs.dirtyData[n]
		fs.dirtyMu.Unlock()
		if busy || d1 || d2 || d3 {
			continue
		}
		fs.nodesMu.Lock()
		if n.lookups == 0 && fs.nodes[n.ino] == n {
			delete(fs.nodes, n.ino)
		}
		fs.nodesMu.Unlock()
	}
}

// shutdown reaps unlinked inodes, writes everything back and releases the
// unused reserved ids.
func (fs *FS) shutdown() error {
	fs.nodesMu.Lock()
	var orphans []*node
	for _, n := range fs.nodes {
		n.lookups = 0
		orphans = append(orphans, n)
	}
	fs.nodesMu.Unlock()
	for _, n := range orphans {
		n.mu.Lock()
		n.opens = 0
		n.mu.Unlock()
		fs.maybeReap(n)
	}
	var err error
	for i := 0; i < 3; i++ {
		if err = fs.flush(); err == nil {
			break
		}
		fs.log.Warnf("final write-back: %v", err)
		time.Sleep(time.Second)
	}
	if err != nil {
		return fmt.Errorf("final write-back: %w", err)
	}
	fs.idMu.Lock()
	free := fs.freeIDs
	fs.freeIDs = nil
	fs.idMu.Unlock()
	if err := fs.b.meta.delMany(free); err != nil {
		fs.log.Warnf("release reserved ids: %v", err)
	}
	fs.b.meta.close()
	fs.b.data.close()
	fs.b.temp.close()
	fs.log.Info("unmounted, everything written to zdb")
	return nil
}

// tuneReadahead raises the kernel read-ahead of the mount (128 KiB by
// default for FUSE) so that sequential reads arrive as large requests.
func tuneReadahead(mnt string, log *logrus.Entry) {
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		return
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte("4096"), 0o644); err != nil {
		log.Debugf("read-ahead: %v", err)
	}
}

// startWatchdog implements auto_unmount for a direct (root) mount: a child
// process waits for the returned pipe to close, which happens when this
// process exits however it exits, and then detaches the mount if it is
// still there.
func startWatchdog(mnt string) (*os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "zdbfs", mnt)
	cmd.Env = append(os.Environ(), watchEnv+"=1")
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	r.Close()
	go cmd.Wait()
	return w, nil
}

// watch is the watchdog: it returns when its parent's pipe closes.
func watch(mnt string) int {
	io.Copy(io.Discard, os.Stdin)
	if mountedZdbfs(mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
	return 0
}

func mountedZdbfs(mnt string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == mnt && f[2] == "fuse.zdbfs" {
			return true
		}
	}
	return false
}

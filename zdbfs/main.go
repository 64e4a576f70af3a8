// Package zdbfs is `qsfs zdbfs`, a FUSE filesystem compatible with 0-db-fs
// 0.1.11: it keeps every inode, directory list and 128 KiB data block in the
// three sequential namespaces zdbfs-meta, zdbfs-data and zdbfs-temp of a
// 0-db server, with the same value layouts (package layout), so that either
// implementation reads what the other wrote.
//
// It owns the command line, the connection pools to zdb (through
// zdb/client only), the in-memory inode, directory and block caches, the
// ordered write-back to zdb, the FUSE operations (go-fuse raw API) and, as
// root, the FUSE mount itself (mount.go: one-second time granularity). It
// does not own zdb itself, nor the namespaces' lifecycle beyond -o autons.
//
// Caching and errors: names, attributes and data are cached by the kernel
// (writeback cache, 5 s entry/attr timeouts) and by zdbfs within the
// cachesize budget; fsync and unmount write everything to zdb. Backend
// errors become EIO, or ENOSPC when zdb reports a full namespace.
package zdbfs

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
)

// Version is reported by -V.
const Version = "0.1.11-qsfs"

const usage = `usage: qsfs zdbfs [-o opt[,opt...]]... <mountpoint>

zdb:        host= port= unix=  (all namespaces)
            mh= mp= mu= ms=    (metadata)   dh= dp= du= ds= (data)
            th= tp= tu= ts=    (temporary)
filesystem: size=<bytes[kMGT]> cachesize=<128 KiB blocks> nocache autons
            background logfile=<path> debug
tuning:     readahead=<bytes[kMG]> dirtylimit=<bytes[kMG]> procs=<n> nowriteback nopagestore
            uring=auto|on|off
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
		ExtraCapabilities:    fuse.CAP_PARALLEL_DIROPS | fuse.CAP_IOCTL_DIR,
	}
	if o.writeback() {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	if o.DefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if o.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	mo.Options = append(mo.Options, o.FuseOptions...)

	// a signal from here on unmounts once the mount is served (instead of
	// killing zdbfs and leaving a dead mount behind)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	// as root zdbfs mounts itself, to announce one-second times (mount.go)
	direct := os.Geteuid() == 0
	var rfs fuse.RawFileSystem = fs
	served := o // go-fuse's view: the magic /dev/fd/N mountpoint
	var sm *selfMount
	if direct && o.AutoUnmount {
		// the watchdog runs before the mount exists, so that however
		// zdbfs ends from then on, the mount goes with it
		w, err := startWatchdog(o.Mountpoint)
		if err != nil {
			log.Warnf("auto_unmount: %v", err)
		} else {
			defer w.Close() // kept open until zdbfs is done
		}
	}
	var us *uringServer
	switch {
	case o.URing == URingOn && !direct:
		return errors.New("uring=on: FUSE over io_uring needs zdbfs to mount as root")
	case o.URing != URingOff && direct:
		us, err = newURingServer(fs, mo, log)
		if err != nil {
			if o.URing == URingOn {
				return fmt.Errorf("uring=on: %w", err)
			}
			log.Infof("FUSE over io_uring not available: %v", err)
		}
	}
	if direct {
		sm, err = mountSelf(o.Mountpoint, mo, us, o.URing)
		if err != nil {
			log.Warnf("direct mount failed, mounting with fusermount3 (no one-second time granularity): %v", err)
			direct = false
			if us != nil {
				us.cancel()
			}
			if o.URing == URingOn {
				return fmt.Errorf("uring=on: %w", err)
			}
		} else {
			rfs = initHook{FS: fs, m: sm}
			c := *o
			c.Mountpoint = sm.fdPath()
			served = &c
		}
	}
	if o.AutoUnmount && !direct {
		mo.Options = append(mo.Options, "auto_unmount")
	}
	srv, procs, err := newServer(rfs, served, mo)
	if sm != nil {
		if err == nil {
			err = sm.err // initHook.Init ran after the hand-off ended
		}
		if err != nil {
			sm.abort()
			if sm.err != nil {
				err = sm.err // the cause, rather than go-fuse's view of it
			}
		}
	}
	if err != nil {
		return fmt.Errorf("mount %q: %w", o.Mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("mount %q: %w", o.Mountpoint, err)
	}
	tuneBDI(o, log)
	log.WithFields(logrus.Fields{"size": size, "procs": procs, "io_uring": sm != nil && sm.uringUsed}).Info("mounted")
	notifyReady(nil)

	go func() {
		s := <-sig
		log.WithField("signal", s.String()).Info("unmounting")
		unmount := srv.Unmount // fusermount3 -u
		if direct {
			unmount = func() error { return syscall.Unmount(o.Mountpoint, 0) }
		}
		for deadline := time.Now().Add(5 * time.Second); ; {
			err := unmount()
			if err == nil {
				return // the kernel ends the session; Serve returns
			}
			if time.Now().After(deadline) {
				log.Warnf("unmount: %v", err)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		log.Warn("mountpoint busy: detaching it")
		syscall.Unmount(o.Mountpoint, syscall.MNT_DETACH)
		// zdbfs serves the open files until they are closed; write
		// everything back now in case it is killed before that
		if err := fs.flush(); err != nil {
			log.Warnf("write-back: %v", err)
		}
	}()

	stop := make(chan struct{})
	go fs.background(stop)
	srv.Wait()
	if sm != nil {
		sm.waitURing() // the kernel ends the rings' commands with the connection
	}
	close(stop)
	return fs.shutdown()
}

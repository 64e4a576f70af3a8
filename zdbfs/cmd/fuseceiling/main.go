// Command fuseceiling is a FUSE server with no file system behind it, for
// scripts/bench-zdbfs.sh: it measures what the kernel's FUSE, and FUSE plus
// one hop to zdb, cost on the machine when nothing else is done, the
// reference a FUSE file system over zdb is compared with.
//
// It mounts itself (root only) with the settings zdbfs uses where they shape
// the kernel's requests (writeback cache, 1 MiB writes, 16 background
// requests, one-second times), answers the requests a small-file loop and a
// large write make from a tree of names it keeps in memory, and either
// discards the data of WRITE requests or, with -zdb, stores it in 128 KiB
// SETs pipelined to a 0-db server in sequential mode with the client zdbfs
// uses (zdb/client, one writev per WRITE). It has no cache, no metadata
// records, no write-back and no locking beyond its name map, and it never
// reads the data back: READ gets ENOSYS. It is a measuring stick, not a file
// system.
//
//	fuseceiling [-zdb SOCKET] [-readers N] MOUNTPOINT
//
// It serves until the mount is unmounted (or SIGINT/SIGTERM, which detach it).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	zdbSock := flag.String("zdb", "", "store WRITE data in the 0-db server at this unix socket (sequential mode); default: discard it")
	readers := flag.Int("readers", 16, "goroutines reading /dev/fuse")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: fuseceiling [-zdb SOCKET] [-readers N] MOUNTPOINT\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *readers < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *zdbSock, *readers); err != nil {
		fmt.Fprintf(os.Stderr, "fuseceiling: %v\n", err)
		os.Exit(1)
	}
}

func run(mnt, zdbSock string, readers int) error {
	dev, err := mount(mnt)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	}()
	s := newServer(dev, zdbSock)
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			if err := s.serve(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// mount opens /dev/fuse and mounts it at mnt, as fusermount3 would for root.
func mount(mnt string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return -1, fmt.Errorf("stat mountpoint %q: %w", mnt, err)
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=0,group_id=0", dev, st.Mode&unix.S_IFMT)
	if err := unix.Mount("fuseceiling", mnt, "fuse.fuseceiling", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(dev)
		return -1, fmt.Errorf("mount %q: %w", mnt, err)
	}
	return dev, nil
}

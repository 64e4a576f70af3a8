package zdbfs

import (
	"os"
	"runtime"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Go scheduler settings for serving FUSE.
//
// go-fuse keeps goroutines blocked in read(2) on /dev/fuse, as many as
// GOMAXPROCS when the server is created (at least 2, plus one it may add).
// A goroutine blocked in a system call keeps its P (the Go scheduler's
// processor) until sysmon, the runtime's monitor thread, takes it back.
// sysmon does so within 20 µs whenever no P is left idle, and then polls
// every 20 µs again for at least the next millisecond. With GOMAXPROCS equal
// to the number of CPUs, the waiting readers hold every P, so a stream of
// small requests (a shell creating files: LOOKUP, CREATE, WRITE, SETATTR,
// RELEASE per file) keeps sysmon waking 50,000 times a second and every
// request pays a P hand-off and a thread wake-up.
//
// So zdbfs creates the server with GOMAXPROCS 1 (go-fuse's minimum of
// readers) and then runs with a few Ps more than the CPUs: the readers
// park on their own Ps and the others stay idle for the request handlers.
// Idle Ps cost nothing; the number of threads running Go code at once is
// still bounded by the runnable goroutines.

// readerSlack is the number of Ps added to the CPUs: the readers go-fuse
// keeps waiting (2, and one more it may start) and one for handlers.
const readerSlack = 3

// newServer creates the FUSE server with few readers and then sets
// GOMAXPROCS to procs (o.Procs, or the CPUs plus readerSlack).
func newServer(fs fuse.RawFileSystem, o *Options, mo *fuse.MountOptions) (*fuse.Server, int, error) {
	cpus := runtime.GOMAXPROCS(0) // CPUs, cgroup quota or $GOMAXPROCS
	procs := o.Procs
	if procs == 0 {
		procs = cpus + readerSlack
		if os.Getenv("GOMAXPROCS") != "" {
			procs = cpus // the user's choice wins
		}
	}
	runtime.GOMAXPROCS(1)
	srv, err := fuse.NewServer(fs, o.Mountpoint, mo)
	runtime.GOMAXPROCS(procs)
	return srv, procs, err
}

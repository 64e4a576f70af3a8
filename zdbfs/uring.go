package zdbfs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/internal/iouring"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// FUSE over io_uring (Linux 6.14+, fs/fuse/dev_uring.c).
//
// With the read(2)/write(2) protocol on /dev/fuse, a request made on one CPU
// wakes whichever zdbfs thread waits on the device, usually on another CPU,
// and the answer wakes the caller back: two cross-CPU wake-ups per request.
// On virtual machines each one is an exit to the hypervisor, and for small
// files they, not zdbfs's work, set the speed.
//
// Over io_uring the kernel keeps one request queue per CPU and hands a
// request made on CPU n to a ring entry registered for queue n. zdbfs runs
// uringThreads threads per CPU, each pinned to its CPU with its own ring and
// one entry (more when they are all busy: grow), so the request is served
// on the CPU that made it, and the answer (COMMIT_AND_FETCH) is also the
// wait for the next request: one system call per request and no cross-CPU
// wake-up. A thread lets go of its CPU while it moves a large READ or WRITE
// (bigOp), up to and including the commit, in which the kernel copies a
// READ's data into the page cache: there the work, not the wake-up, is the
// cost, and pinned it would share one CPU with the reader or writer while
// the other idles. Measured (2-vCPU
// VM, interleaved, relative to /dev/fuse): dd write 0.86× pinned, 0.94×
// unpinned; fio sequential read 0.87× re-pinned before the commit, 0.91×
// after; forcing the thread onto another CPU was slower (0.83×); small files
// 1.6–1.7× in every variant.
//
// The kernel offers it only when the fuse module's enable_uring parameter
// is set, and only to a server that says so in its FUSE_INIT reply, which
// zdbfs writes itself on its direct (root) mount (mount.go). FORGETs,
// interrupts and notifications stay on /dev/fuse, served by go-fuse as
// before. An INTERRUPT for a request on a ring reaches go-fuse, which does
// not know the request and answers EAGAIN; the kernel cannot match that
// answer (the request is in the ring's queue) and drops it, so nothing
// loops. zdbfs's handlers never act on interrupts anyway, on either path.

const (
	uringCmdRegister = 1 // FUSE_IO_URING_CMD_REGISTER
	uringCmdCommit   = 2 // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

	// the kernel's INIT flag bit 41: FUSE_OVER_IO_URING, in flags2
	initOverIOURing = 1 << (41 - 32)
	initExt         = 1 << 30 // FUSE_INIT_EXT: flags2 is valid

	uringInOutSize = 128 // fuse_uring_req_header.in_out
	uringOpInSize  = 128 // fuse_uring_req_header.op_in
	uringHdrSize   = uringInOutSize + uringOpInSize + int(unsafe.Sizeof(uringEntInOut{}))

	// uringThreads is the number of threads (and ring entries) per CPU
	// at the start: how many requests made on one CPU are served at once.
	uringThreads = 4
	// uringMaxThreads bounds the threads of one CPU's queue that grow
	// adds when all of its entries are busy.
	uringMaxThreads = 32
	// uringStandby is the number of threads per CPU set up in advance
	// for grow.
	uringStandby = 2
)

// URing modes (option uring=).
const (
	URingAuto = "auto" // use it when the kernel offers it
	URingOn   = "on"   // fail the mount when it is not available
	URingOff  = "off"
)

// uringEntInOut is struct fuse_uring_ent_in_out.
type uringEntInOut struct {
	Flags     uint64
	CommitID  uint64
	PayloadSz uint32
	Padding   uint32
	Reserved  uint64
}

// uringCmdReq is struct fuse_uring_cmd_req, in the SQE's command area.
type uringCmdReq struct {
	Flags    uint64
	CommitID uint64
	QID      uint16
	Padding  [6]byte
}

// uringServer serves the kernel's io_uring queues of one mount.
type uringServer struct {
	fs      fuse.RawFileSystem
	log     *logrus.Entry
	debug   bool // log every request (option debug)
	payload int  // bytes of each entry's payload buffer

	threads []*uringThread
	queues  []uringQueue  // one per kernel queue (possible CPU)
	served  atomic.Uint64 // requests answered on the rings
	start   chan int      // gets the /dev/fuse descriptor once INIT is answered
	quit    chan struct{} // closed when the connection is gone: standbys end
	anyCPU  unix.CPUSet   // where a thread may run while it moves data (bigOp)
	wg      sync.WaitGroup
}

// uringQueue counts the entries of one kernel queue.
type uringQueue struct {
	idle    atomic.Int32 // handed to the kernel, waiting for a request
	threads atomic.Int32 // running or being set up
	wake    chan int     // the /dev/fuse descriptor for the standby thread (grow)
}

// uringThread is one pinned OS thread with its ring and entry.
type uringThread struct {
	srv  *uringServer
	qid  int
	ring *iouring.Ring
	ent  uringEnt
}

// uringEnt is one ring entry: the header and payload buffers registered
// with the kernel (mapped memory, outside the Go heap) and scratch space.
type uringEnt struct {
	hdr     []byte             // fuse_uring_req_header
	payload []byte             // request arguments in, reply arguments out
	iov     *[2]unix.Iovec     // the two buffers, for REGISTER
	in      [inScratch]byte    // InHeader followed by op_in: go-fuse's XxxIn
	out     [outScratch]uint64 // fixed-size reply struct (8-byte aligned)
	mem     [][]byte           // mappings to release
	pin     unix.CPUSet        // the thread's CPU
}

const (
	inScratch  = inHeaderSize + uringOpInSize
	outScratch = 256 / 8
)

// possibleCPUs is the number of queues the kernel makes: num_possible_cpus.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, fmt.Errorf("read possible CPUs: %w", err)
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("parse possible CPUs %q: %w", b, err)
		}
		z := a
		if isRange {
			if z, err = strconv.Atoi(hi); err != nil {
				return 0, fmt.Errorf("parse possible CPUs %q: %w", b, err)
			}
		}
		if z+1 > n {
			n = z + 1
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no possible CPUs in %q", b)
	}
	return n, nil
}

// newURingServer starts the pinned threads and their rings. They register
// with the kernel once begin is called after the INIT reply. An error means
// io_uring cannot be used here; nothing is left running.
func newURingServer(fs fuse.RawFileSystem, mo *fuse.MountOptions, log *logrus.Entry) (*uringServer, error) {
	cpus, err := possibleCPUs()
	if err != nil {
		return nil, err
	}
	s := &uringServer{fs: fs, log: log, start: make(chan int, cpus*uringThreads),
		queues: make([]uringQueue, cpus), quit: make(chan struct{}),
		debug: log.Logger.IsLevelEnabled(logrus.DebugLevel)}
	for q := range s.queues {
		s.queues[q].wake = make(chan int, uringStandby)
	}
	s.payload = maxRead(mo)
	if pages := maxPagesLimit() * os.Getpagesize(); pages > s.payload {
		s.payload = pages // the kernel asks for max_pages worth at least
	}
	for c := 0; c < cpus; c++ {
		s.anyCPU.Set(c)
	}
	ready := make(chan error)
	for q := 0; q < cpus; q++ {
		for i := 0; i < uringThreads; i++ {
			t := &uringThread{srv: s, qid: q}
			s.wg.Add(1)
			go t.run(ready)
			if err := <-ready; err != nil {
				s.cancel()
				return nil, err
			}
			s.threads = append(s.threads, t)
			s.queues[q].threads.Add(1)
		}
	}
	return s, nil
}

// begin hands the threads the /dev/fuse descriptor: they register their
// entries and serve. dev must stay open until wait returns.
func (s *uringServer) begin(dev int) {
	for range s.threads {
		s.start <- dev
	}
	for q := range s.queues {
		for i := 0; i < uringStandby; i++ {
			s.standby(q)
		}
	}
}

// cancel stops threads that have not begun (INIT did not enable io_uring).
func (s *uringServer) cancel() {
	close(s.start)
	s.wg.Wait()
}

// wait returns when every thread has ended (the connection is gone).
func (s *uringServer) wait() {
	close(s.quit)
	s.wg.Wait()
	threads := 0
	for q := range s.queues {
		threads += int(s.queues[q].threads.Load())
	}
	s.log.WithFields(logrus.Fields{"requests": s.served.Load(), "threads": threads}).Info("FUSE over io_uring ended")
}

func (t *uringThread) run(ready chan<- error) {
	defer t.srv.wg.Done()
	runtime.LockOSThread() // the thread dies with the goroutine: it was pinned
	err := t.setup()
	defer t.close() // also what a failed setup made
	ready <- err
	if err != nil {
		return
	}
	dev, ok := <-t.srv.start
	if !ok {
		return
	}
	if err := t.serve(dev); err != nil {
		t.srv.log.WithField("queue", t.qid).Warnf("fuse over io_uring: %v", err)
	}
}

// grow wakes the standby thread of queue q, whose entries all serve a
// request. The kernel hands a request made on a CPU only to an entry of
// that CPU's queue, and one that finds none is queued until an entry of
// that queue commits (an entry registered later does not take it): if the
// requests being served wait (for a stalled zdb, a long fsync), every
// other request made on that CPU waits behind them, even one zdbfs
// answers from memory, where go-fuse serves any number at once over
// /dev/fuse. So a queue keeps an idle entry, up to uringMaxThreads
// threads, and threads set up in advance (standby) register it, so that
// the time a request can find none is one system call, not a thread's
// setup (a burst of more than uringStandby requests that all wait can
// still leave a request queued behind them until one answers). The kernel
// cannot take an entry back: a thread added stays until the connection
// ends.
func (s *uringServer) grow(q, dev int) {
	select {
	case s.queues[q].wake <- dev:
	default: // all standbys already woken
	}
}

// standby starts a thread for queue q that sets up its ring and entry and
// waits for grow.
func (s *uringServer) standby(q int) {
	if s.queues[q].threads.Add(1) > uringMaxThreads {
		s.queues[q].threads.Add(-1)
		return
	}
	t := &uringThread{srv: s, qid: q}
	s.wg.Add(1) // begin or a running thread holds the count above 0 (wait)
	go t.runStandby()
}

func (t *uringThread) runStandby() {
	s := t.srv
	defer s.wg.Done()
	runtime.LockOSThread()
	err := t.setup()
	defer t.close()
	if err != nil {
		s.queues[t.qid].threads.Add(-1)
		s.log.WithField("queue", t.qid).Warnf("fuse over io_uring: %v", err)
		return
	}
	var dev int
	select {
	case dev = <-s.queues[t.qid].wake:
	case <-s.quit:
		return
	}
	s.standby(t.qid) // the next one gets ready while this one serves
	if err := t.serve(dev); err != nil {
		s.log.WithField("queue", t.qid).Warnf("fuse over io_uring: %v", err)
	}
}

func (t *uringThread) setup() error {
	set := &t.ent.pin
	set.Set(t.qid)

	// a CPU that is not online takes no requests; its queue still needs
	// an entry, served from wherever the thread runs
	_ = unix.SchedSetaffinity(0, set)
	r, err := iouring.New(4, iouring.SetupSingleIssuer|iouring.SetupDeferTaskrun|iouring.SetupCoopTaskrun)
	if err != nil {
		return err
	}
	t.ring = r
	if err := t.ent.alloc(t.srv.payload); err != nil {
		return err
	}
	return nil
}

func (t *uringThread) close() {
	if t.ring != nil {
		t.ring.Close()
	}
	t.ent.free()
}

func (e *uringEnt) alloc(payload int) error {
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS
	h, err := unix.Mmap(-1, 0, os.Getpagesize(), prot, flags)
	if err != nil {
		return fmt.Errorf("map io_uring entry header: %w", err)
	}
	e.mem = append(e.mem, h)
	p, err := unix.Mmap(-1, 0, payload, prot, flags)
	if err != nil {
		e.free()
		return fmt.Errorf("map io_uring entry payload of %d bytes: %w", payload, err)
	}
	e.mem = append(e.mem, p)
	e.hdr, e.payload = h[:uringHdrSize], p
	e.iov = (*[2]unix.Iovec)(unsafe.Pointer(&h[(uringHdrSize+15)&^15]))
	e.iov[0].Base, e.iov[1].Base = &e.hdr[0], &e.payload[0]
	e.iov[0].SetLen(len(e.hdr))
	e.iov[1].SetLen(len(e.payload))
	return nil
}

func (e *uringEnt) free() {
	for _, m := range e.mem {
		unix.Munmap(m)
	}
	e.mem = nil
}

// push queues a REGISTER or COMMIT_AND_FETCH for the entry.
func (t *uringThread) push(dev int, cmd uint32, commitID uint64) {
	sqe := t.ring.Next() // one entry per thread: the queue always has room
	sqe.SetOp(iouring.OpURingCmd, int32(dev), 0)
	sqe.SetCmdOp(cmd)
	sqe.SetAddr(unsafe.Pointer(t.ent.iov), 2)
	req := (*uringCmdReq)(unsafe.Pointer(&sqe.Cmd()[0]))
	req.CommitID = commitID
	req.QID = uint16(t.qid)
}

// serve registers the entry and answers requests until the connection
// ends.
func (t *uringThread) serve(dev int) error {
	q := &t.srv.queues[t.qid]
	t.push(dev, uringCmdRegister, 0)
	q.idle.Add(1)
	for {
		if err := t.ring.Submit(1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		c, ok := t.ring.Peek()
		if !ok {
			continue
		}
		t.ring.Seen()
		if c.Res < 0 {
			switch e := unix.Errno(-c.Res); e {
			case unix.ENOTCONN, unix.ECONNABORTED, unix.ECANCELED, unix.ENODEV:
				return nil // unmounted
			default:
				return fmt.Errorf("queue %d: %w", t.qid, e)
			}
		}
		if q.idle.Add(-1) <= 0 {
			t.srv.grow(t.qid, dev)
		}
		commit, big := t.ent.handle(t.srv)
		t.srv.served.Add(1)
		t.push(dev, uringCmdCommit, commit)
		q.idle.Add(1)
		if big {
			// commit now, off the pinned CPU, then go back to it to
			// wait for the next request
			if err := t.ring.Submit(0); err != nil && !errors.Is(err, unix.EINTR) {
				return err
			}
			unix.SchedSetaffinity(0, &t.ent.pin)
		}
	}
}

// maxPagesLimit is the kernel's upper bound of max_pages.
func maxPagesLimit() int {
	if b, err := os.ReadFile("/proc/sys/fs/fuse/max_pages_limit"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 256
}

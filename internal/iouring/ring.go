// Package iouring is a minimal io_uring instance for one OS thread: 128-byte
// submission entries (IORING_SETUP_SQE128, which IORING_OP_URING_CMD
// commands such as FUSE's need), submit-and-wait, and completion reaping.
// It owns the ring's memory and system calls, nothing about what the
// commands mean; zdbfs's FUSE-over-io_uring transport is its user.
//
// A Ring is not safe for concurrent use. Created with SingleIssuer, it must
// be used only by the OS thread that created it (runtime.LockOSThread).
package iouring

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Setup flags (include/uapi/linux/io_uring.h).
const (
	SetupCoopTaskrun  = 1 << 8
	SetupSQE128       = 1 << 10
	SetupSingleIssuer = 1 << 12
	SetupDeferTaskrun = 1 << 13
)

// Opcodes used here.
const (
	OpNop      = 0
	OpURingCmd = 46
)

const (
	sysSetup = 425
	sysEnter = 426

	enterGetEvents = 1
	featSingleMmap = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	// SQESize is the size of one submission entry with SetupSQE128.
	SQESize = 128
	cqeSize = 16
)

type sqOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqOffsets
	CQOff                                                                  cqOffsets
}

// SQE is a 128-byte submission entry. Fields are set through its methods;
// Cmd is the 80-byte command area of IORING_OP_URING_CMD.
type SQE [SQESize]byte

// CQE is a completion.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Ring is one io_uring instance.
type Ring struct {
	fd        int
	sqMem     []byte
	cqMem     []byte // aliases sqMem with IORING_FEAT_SINGLE_MMAP
	sqes      []byte
	sqHead    *uint32
	sqTail    *uint32
	sqMask    uint32
	sqArray   unsafe.Pointer
	cqHead    *uint32
	cqTail    *uint32
	cqMask    uint32
	cqes      unsafe.Pointer
	sqLocal   uint32 // next tail to publish
	sqEntries uint32
}

// New sets up a ring with at least entries submission entries; flags are
// Setup* values and always include SetupSQE128.
func New(entries uint32, flags uint32) (*Ring, error) {
	p := params{Flags: flags | SetupSQE128}
	fd, _, errno := unix.Syscall(sysSetup, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup(%d entries, flags %#x): %w", entries, p.Flags, errno)
	}
	r := &Ring{fd: int(fd), sqEntries: p.SQEntries}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mmap(p *params) error {
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	cqSize := int(p.CQOff.Cqes) + int(p.CQEntries)*cqeSize
	single := p.Features&featSingleMmap != 0
	if single && cqSize > sqSize {
		sqSize = cqSize
	}
	var err error
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("mmap io_uring submission ring: %w", err)
	}
	r.cqMem = r.sqMem
	if !single {
		if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
			r.cqMem = nil
			return fmt.Errorf("mmap io_uring completion ring: %w", err)
		}
	}
	if r.sqes, err = unix.Mmap(r.fd, offSQEs, int(p.SQEntries)*SQESize, prot, flags); err != nil {
		return fmt.Errorf("mmap io_uring submission entries: %w", err)
	}
	sq, cq := unsafe.Pointer(&r.sqMem[0]), unsafe.Pointer(&r.cqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.SQOff.Head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.SQOff.Tail))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.SQOff.RingMask))
	r.sqArray = unsafe.Add(sq, p.SQOff.Array)
	r.cqHead = (*uint32)(unsafe.Add(cq, p.CQOff.Head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.CQOff.Tail))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.CQOff.RingMask))
	r.cqes = unsafe.Add(cq, p.CQOff.Cqes)
	r.sqLocal = atomic.LoadUint32(r.sqTail)
	return nil
}

// Close unmaps the ring and closes its descriptor; commands still in
// flight are cancelled by the kernel.
func (r *Ring) Close() error {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
		r.sqes = nil
	}
	if len(r.cqMem) > 0 && &r.cqMem[0] != &r.sqMem[0] {
		unix.Munmap(r.cqMem)
	}
	r.cqMem = nil
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
		r.sqMem = nil
	}
	if r.fd >= 0 {
		err := unix.Close(r.fd)
		r.fd = -1
		return err
	}
	return nil
}

// Next returns a zeroed submission entry to fill, or nil when the
// submission queue is full (call Submit first).
func (r *Ring) Next() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqLocal-head >= r.sqEntries {
		return nil
	}
	idx := r.sqLocal & r.sqMask
	e := (*SQE)(unsafe.Pointer(&r.sqes[int(idx)*SQESize]))
	*e = SQE{}
	*(*uint32)(unsafe.Add(r.sqArray, idx*4)) = idx
	r.sqLocal++
	return e
}

// Submit publishes the filled entries and, with wait > 0, waits until at
// least wait completions are available. EINTR is returned to the caller.
func (r *Ring) Submit(wait uint32) error {
	atomic.StoreUint32(r.sqTail, r.sqLocal)
	var flags uintptr
	if wait > 0 {
		flags = enterGetEvents
	}
	// entries the kernel has not consumed yet (an interrupted call may
	// have consumed some)
	todo := r.sqLocal - atomic.LoadUint32(r.sqHead)
	_, _, errno := unix.Syscall6(sysEnter, uintptr(r.fd), uintptr(todo), uintptr(wait), flags, 0, 0)
	if errno != 0 {
		return fmt.Errorf("io_uring_enter: %w", errno)
	}
	return nil
}

// Peek returns the oldest completion without consuming it.
func (r *Ring) Peek() (CQE, bool) {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return CQE{}, false
	}
	return *(*CQE)(unsafe.Add(r.cqes, (head&r.cqMask)*cqeSize)), true
}

// Seen consumes the completion Peek returned.
func (r *Ring) Seen() {
	atomic.StoreUint32(r.cqHead, atomic.LoadUint32(r.cqHead)+1)
}

// SetOp sets the opcode, descriptor and user data of an entry.
func (e *SQE) SetOp(op uint8, fd int32, userData uint64) {
	e[0] = op
	*(*int32)(unsafe.Pointer(&e[4])) = fd
	*(*uint64)(unsafe.Pointer(&e[32])) = userData
}

// SetCmdOp sets the command of IORING_OP_URING_CMD (the low half of off).
func (e *SQE) SetCmdOp(op uint32) { *(*uint32)(unsafe.Pointer(&e[8])) = op }

// SetAddr sets addr and len.
func (e *SQE) SetAddr(addr unsafe.Pointer, n uint32) {
	*(*uint64)(unsafe.Pointer(&e[16])) = uint64(uintptr(addr))
	*(*uint32)(unsafe.Pointer(&e[24])) = n
}

// Cmd is the 80-byte command area of a 128-byte entry.
func (e *SQE) Cmd() []byte { return e[48:SQESize] }

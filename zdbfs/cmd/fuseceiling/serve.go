package main

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdb/client"
	"golang.org/x/sys/unix"
)

// The kernel's opcodes (include/uapi/linux/fuse.h) that the server answers.
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opOpen        = 14
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFsync       = 20
	opInit        = 26
	opInterrupt   = 36
	opCreate      = 35
	opDestroy     = 38
	opBatchForget = 42
)

const (
	maxWrite     = 1 << 20
	blockSize    = 128 << 10 // zdbfs's block: one SET each
	ttl          = 5         // entry and attribute timeouts, seconds (as zdbfs)
	sendBuffer   = 2 << 20   // unix socket send buffer (as zdbfs)
	zdbTimeout   = 60 * time.Second
	inHeaderSize = int(unsafe.Sizeof(fuse.InHeader{}))
	ourMinor     = 28 // the protocol minor go-fuse 2.12.1 (so zdbfs) answers
)

// node is a file or directory of the in-memory tree.
type node struct {
	dir      bool
	size     uint64
	children map[string]uint64 // directories only
}

type server struct {
	dev     int
	zdbSock string // "" = discard WRITE data
	conns   chan *client.Conn

	mu    sync.Mutex
	nodes map[uint64]*node
	next  uint64
	start uint64 // times shown for every node, in seconds
}

func newServer(dev int, zdbSock string) *server {
	return &server{
		dev:     dev,
		zdbSock: zdbSock,
		conns:   make(chan *client.Conn, 64),
		nodes:   map[uint64]*node{1: {dir: true, children: map[string]uint64{}}},
		next:    2,
		start:   uint64(time.Now().Unix()),
	}
}

// serve reads and answers requests until the mount goes away.
func (s *server) serve() error {
	buf := make([]byte, maxWrite+64<<10)
	for {
		n, err := unix.Read(s.dev, buf)
		switch {
		case err == unix.EINTR || err == unix.ENOENT || err == unix.EAGAIN:
			continue // interrupted, or a request the kernel took back
		case err == unix.ENODEV:
			return nil // unmounted
		case err != nil:
			return fmt.Errorf("read /dev/fuse: %w", err)
		case n < inHeaderSize:
			return fmt.Errorf("read /dev/fuse: short request of %d bytes", n)
		}
		s.handle(buf[:n])
	}
}

// handle answers one request.
func (s *server) handle(req []byte) {
	h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	switch h.Opcode {
	case opInit:
		in := as[fuse.InitIn](req)
		const want = fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES | fuse.CAP_WRITEBACK_CACHE |
			fuse.CAP_MAX_PAGES | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_ATOMIC_O_TRUNC
		s.reply(h, 0, raw(&fuse.InitOut{
			Major: 7, Minor: min(in.Minor, ourMinor),
			MaxReadAhead: in.MaxReadAhead, Flags: in.Flags & uint32(want),
			MaxBackground: 16, CongestionThreshold: 12, MaxWrite: maxWrite,
			TimeGran: 1_000_000_000, MaxPages: maxWrite / 4096,
		}))
	case opLookup:
		out := &fuse.EntryOut{}
		s.mu.Lock()
		ino, ok := s.child(h.NodeId, name(req, inHeaderSize))
		if ok {
			s.entry(ino, out)
		}
		s.mu.Unlock()
		out.EntryValid = ttl // a negative entry (NodeId 0) is cached too
		s.reply(h, 0, raw(out))
	case opGetattr, opSetattr:
		out := &fuse.AttrOut{}
		s.mu.Lock()
		n, ok := s.nodes[h.NodeId]
		if ok && h.Opcode == opSetattr {
			if in := as[fuse.SetAttrIn](req); in.Valid&fuse.FATTR_SIZE != 0 {
				n.size = in.Size
			}
		}
		if ok {
			s.attr(h.NodeId, &out.Attr)
		}
		s.mu.Unlock()
		out.AttrValid = ttl
		s.answer(h, ok, raw(out))
	case opMkdir, opCreate:
		var at int
		if h.Opcode == opMkdir {
			at = int(unsafe.Sizeof(fuse.MkdirIn{}))
		} else {
			at = int(unsafe.Sizeof(fuse.CreateIn{}))
		}
		out := &fuse.CreateOut{}
		s.mu.Lock()
		ino, errno := s.add(h.NodeId, name(req, at), h.Opcode == opMkdir)
		if errno == 0 {
			s.entry(ino, &out.EntryOut)
		}
		s.mu.Unlock()
		if h.Opcode == opMkdir {
			s.reply(h, errno, raw(&out.EntryOut))
		} else {
			s.reply(h, errno, raw(out))
		}
	case opUnlink, opRmdir:
		s.mu.Lock()
		ok := s.remove(h.NodeId, name(req, inHeaderSize))
		s.mu.Unlock()
		s.answer(h, ok, nil)
	case opOpen:
		s.reply(h, 0, raw(&fuse.OpenOut{}))
	case opWrite:
		in := as[fuse.WriteIn](req)
		data := req[unsafe.Sizeof(fuse.WriteIn{}):]
		data = data[:min(len(data), int(in.Size))]
		if err := s.store(data); err != nil {
			fmt.Printf("fuseceiling: store %d bytes: %v\n", len(data), err)
			s.reply(h, syscall.EIO, nil)
			return
		}
		s.mu.Lock()
		if n, ok := s.nodes[h.NodeId]; ok {
			n.size = max(n.size, in.Offset+uint64(len(data)))
		}
		s.mu.Unlock()
		s.reply(h, 0, raw(&fuse.WriteOut{Size: uint32(len(data))}))
	case opStatfs:
		s.reply(h, 0, raw(&fuse.StatfsOut{Blocks: 1 << 40, Bfree: 1 << 40, Bavail: 1 << 40, Bsize: 4096, NameLen: 255, Frsize: 4096}))
	case opRelease, opFsync, opDestroy:
		s.reply(h, 0, nil)
	case opForget, opBatchForget, opInterrupt:
		// no answer: names live until they are unlinked
	default:
		// FLUSH among them, as zdbfs answers it: the kernel then stops
		// sending it, and a small file costs LOOKUP, CREATE, WRITE and
		// RELEASE
		s.reply(h, syscall.ENOSYS, nil)
	}
}

// store sends data to zdb as blockSize SETs in one pipeline, as zdbfs does
// for the whole blocks of a WRITE; without -zdb it does nothing.
func (s *server) store(data []byte) error {
	if s.zdbSock == "" {
		return nil
	}
	c, err := s.conn()
	if err != nil {
		return err
	}
	sets := 0
	for off := 0; off < len(data); off += blockSize {
		if err := c.Send("SET", "", data[off:min(off+blockSize, len(data))]); err != nil {
			c.Close()
			return err
		}
		sets++
	}
	if err := c.Flush(); err != nil {
		c.Close()
		return err
	}
	var first error
	for range sets {
		r, err := c.Receive()
		if err != nil {
			c.Close()
			return err
		}
		if err := r.Err(); err != nil && first == nil {
			first = err
		}
	}
	select {
	case s.conns <- c:
	default:
		c.Close()
	}
	return first
}

// conn returns a pooled zdb connection or dials one.
func (s *server) conn() (*client.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	default:
	}
	c, err := client.Dial("unix", s.zdbSock, zdbTimeout)
	if err != nil {
		return nil, err
	}
	c.SetGather(true)
	if err := c.SetWriteBuffer(sendBuffer); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// child looks name up in directory dir. s.mu held.
func (s *server) child(dir uint64, name string) (uint64, bool) {
	d, ok := s.nodes[dir]
	if !ok || !d.dir {
		return 0, false
	}
	ino, ok := d.children[name]
	return ino, ok
}

// add makes a file or directory name in dir. s.mu held.
func (s *server) add(dir uint64, name string, isDir bool) (uint64, syscall.Errno) {
	d, ok := s.nodes[dir]
	switch {
	case !ok:
		return 0, syscall.ENOENT
	case !d.dir:
		return 0, syscall.ENOTDIR
	}
	if _, exists := d.children[name]; exists {
		return 0, syscall.EEXIST
	}
	ino := s.next
	s.next++
	n := &node{dir: isDir}
	if isDir {
		n.children = map[string]uint64{}
	}
	s.nodes[ino] = n
	d.children[name] = ino
	return ino, 0
}

// remove drops name from dir. s.mu held.
func (s *server) remove(dir uint64, name string) bool {
	ino, ok := s.child(dir, name)
	if ok {
		delete(s.nodes[dir].children, name)
		delete(s.nodes, ino)
	}
	return ok
}

// entry fills out for ino. s.mu held.
func (s *server) entry(ino uint64, out *fuse.EntryOut) {
	out.NodeId = ino
	out.EntryValid = ttl
	out.AttrValid = ttl
	s.attr(ino, &out.Attr)
}

// attr fills a for ino. s.mu held.
func (s *server) attr(ino uint64, a *fuse.Attr) {
	n := s.nodes[ino]
	a.Ino = ino
	a.Size = n.size
	a.Blocks = (n.size + 511) / 512
	a.Blksize = 4096
	a.Atime, a.Mtime, a.Ctime = s.start, s.start, s.start
	if n.dir {
		a.Mode, a.Nlink = syscall.S_IFDIR|0o755, 2
	} else {
		a.Mode, a.Nlink = syscall.S_IFREG|0o644, 1
	}
}

// answer replies payload when ok, else ENOENT.
func (s *server) answer(h *fuse.InHeader, ok bool, payload []byte) {
	if !ok {
		s.reply(h, syscall.ENOENT, nil)
		return
	}
	s.reply(h, 0, payload)
}

// reply writes the answer to request h: payload, or errno.
func (s *server) reply(h *fuse.InHeader, errno syscall.Errno, payload []byte) {
	oh := fuse.OutHeader{Unique: h.Unique, Status: -int32(errno)}
	if errno != 0 {
		payload = nil
	}
	oh.Length = uint32(int(unsafe.Sizeof(oh)) + len(payload))
	iov := [][]byte{raw(&oh)}
	if len(payload) > 0 {
		iov = append(iov, payload)
	}
	if _, err := unix.Writev(s.dev, iov); err != nil && !errors.Is(err, unix.ENOENT) {
		fmt.Printf("fuseceiling: reply to opcode %d: %v\n", h.Opcode, err)
	}
}

// raw is the memory of *p, the kernel's layout of the struct.
func raw[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// as is the request's struct (go-fuse's In types start with the header).
func as[T any](req []byte) *T {
	var zero T
	if len(req) < int(unsafe.Sizeof(zero)) {
		return &zero
	}
	return (*T)(unsafe.Pointer(&req[0]))
}

// name is the NUL-terminated name at req[at:].
func name(req []byte, at int) string {
	if at >= len(req) {
		return ""
	}
	b := req[at:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

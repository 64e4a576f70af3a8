package zdbfs

import (
	"bytes"
	"runtime/debug"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Decoding the requests that arrive on a ring entry, calling the file
// system as go-fuse's own dispatch does (same argument conventions, same
// special cases), and encoding the reply for COMMIT_AND_FETCH.
//
// The kernel puts the request's fuse_in_header in in_out, its first
// argument (the fixed per-opcode struct) in op_in and the rest (names,
// write data) in the payload; the reply's fuse_out_header goes to in_out and
// all its arguments to the payload. Requests and replies share the payload
// buffer, so inputs that outlive the call's start are copied first.

// FUSE opcodes served on the rings.
const (
	opLookup        = 1
	opGetattr       = 3
	opSetattr       = 4
	opReadlink      = 5
	opSymlink       = 6
	opMknod         = 8
	opMkdir         = 9
	opUnlink        = 10
	opRmdir         = 11
	opRename        = 12
	opLink          = 13
	opOpen          = 14
	opRead          = 15
	opWrite         = 16
	opStatfs        = 17
	opRelease       = 18
	opFsync         = 20
	opSetxattr      = 21
	opGetxattr      = 22
	opListxattr     = 23
	opRemovexattr   = 24
	opFlush         = 25
	opOpendir       = 27
	opReaddir       = 28
	opReleasedir    = 29
	opFsyncdir      = 30
	opGetlk         = 31
	opSetlk         = 32
	opSetlkw        = 33
	opAccess        = 34
	opCreate        = 35
	opDestroy       = 38
	opIoctl         = 39
	opFallocate     = 43
	opReaddirplus   = 44
	opRename2       = 45
	opLseek         = 46
	opCopyFileRange = 47
	opTmpfile       = 51
)

// handle serves the request in the entry and writes the reply into it. It
// returns the request's commit id, and whether the thread left its CPU for
// it (bigOp): then it returns to it only after the commit, so that the
// kernel copies a large reply on whatever CPU the thread runs on.
func (e *uringEnt) handle(s *uringServer) (uint64, bool) {
	io := (*uringEntInOut)(unsafe.Pointer(&e.hdr[uringInOutSize+uringOpInSize]))
	copy(e.in[:inHeaderSize], e.hdr[:inHeaderSize])
	copy(e.in[inHeaderSize:], e.hdr[uringInOutSize:uringInOutSize+uringOpInSize])
	h := (*fuse.InHeader)(unsafe.Pointer(&e.in[0]))
	n := int(io.PayloadSz)
	if n > len(e.payload) {
		n = len(e.payload)
	}
	big := bigOp(h.Opcode, n, in[fuse.ReadIn](e).Size)
	if big {
		unix.SchedSetaffinity(0, &s.anyCPU)
	}
	size, st := e.serve(s, h, e.payload[:n])
	if st != fuse.OK {
		size = 0
	}
	if s.debug {
		s.log.WithFields(logrus.Fields{"op": h.Opcode, "node": h.NodeId}).Debugf("io_uring request: %v", st)
	}
	commit := io.CommitID
	// the op_in area is not part of a reply; zero it so that the next
	// request's shorter struct does not read stale bytes past its end
	clear(e.hdr[uringInOutSize : uringInOutSize+uringOpInSize])
	out := (*fuse.OutHeader)(unsafe.Pointer(&e.hdr[0]))
	out.Length = uint32(outHeaderSize + size)
	out.Status = -int32(st)
	out.Unique = h.Unique
	io.PayloadSz = uint32(size)
	return commit, big
}

// serve is dispatch, with a handler's panic answered EIO as go-fuse's
// default PanicHandler does over /dev/fuse: the ring thread goes on
// serving, and zdbfs and its mount survive.
func (e *uringEnt) serve(s *uringServer, h *fuse.InHeader, p []byte) (size int, st fuse.Status) {
	defer func() {
		if r := recover(); r != nil {
			s.log.WithField("op", h.Opcode).Errorf("panic in FS handler: %v\n%s", r, debug.Stack())
			size, st = 0, fuse.EIO
		}
	}()
	return e.dispatch(s.fs, h, p)
}

// bigOp reports whether a request moves enough data for its thread to
// leave its CPU while serving it (uring.go): WRITEs and READs of 64 KiB or
// more.
func bigOp(op uint32, payload int, readSize uint32) bool {
	const big = 64 << 10
	return op == opWrite && payload >= big || op == opRead && readSize >= big
}

// in returns the request's struct (InHeader then op_in) as *T.
func in[T any](e *uringEnt) *T { return (*T)(unsafe.Pointer(&e.in[0])) }

// out returns a zeroed reply struct of type T in scratch space.
func out[T any](e *uringEnt) *T {
	var zero T
	p := (*T)(unsafe.Pointer(&e.out[0]))
	*p = zero
	return p
}

// reply copies the reply struct *p to the payload and returns its size.
func reply[T any](e *uringEnt, p *T) int {
	return copy(e.payload, unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p)))
}

// cstring is the NUL-terminated string at the start of b, and the rest.
func cstring(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), nil, false
	}
	return string(b[:i]), b[i+1:], true
}

// cstrings is the two NUL-terminated strings at the start of b.
func cstrings(b []byte) (string, string, bool) {
	n1, rest, ok := cstring(b)
	if !ok {
		return n1, "", false
	}
	n2, _, ok := cstring(rest)
	return n1, n2, ok
}

// fixed calls a handler that fills a reply struct of type T and returns the
// reply's size, or the handler's error.
func fixed[T any](e *uringEnt, call func(o *T) fuse.Status) (int, fuse.Status) {
	o := out[T](e)
	if st := call(o); st != fuse.OK {
		return 0, st
	}
	return reply(e, o), fuse.OK
}

// dispatch calls fs for the request and returns the reply's payload size.
func (e *uringEnt) dispatch(fs fuse.RawFileSystem, h *fuse.InHeader, p []byte) (int, fuse.Status) {
	var name string
	switch h.Opcode {
	case opLookup, opMknod, opMkdir, opUnlink, opRmdir, opLink, opCreate, opGetxattr, opRemovexattr:
		name, _, _ = cstring(p)
	}
	switch h.Opcode {
	case opLookup:
		return fixed(e, func(o *fuse.EntryOut) fuse.Status { return fs.Lookup(nil, h, name, o) })
	case opGetattr:
		return fixed(e, func(o *fuse.AttrOut) fuse.Status { return fs.GetAttr(nil, in[fuse.GetAttrIn](e), o) })
	case opSetattr:
		return fixed(e, func(o *fuse.AttrOut) fuse.Status { return fs.SetAttr(nil, in[fuse.SetAttrIn](e), o) })
	case opReadlink:
		b, st := fs.Readlink(nil, h)
		if st != fuse.OK {
			return 0, st
		}
		return copy(e.payload, b), fuse.OK
	case opSymlink:
		n1, n2, ok := cstrings(p)
		if !ok {
			return 0, fuse.EIO
		}
		return fixed(e, func(o *fuse.EntryOut) fuse.Status { return fs.Symlink(nil, h, n2, n1, o) })
	case opMknod:
		return fixed(e, func(o *fuse.EntryOut) fuse.Status { return fs.Mknod(nil, in[fuse.MknodIn](e), name, o) })
	case opMkdir:
		return fixed(e, func(o *fuse.EntryOut) fuse.Status { return fs.Mkdir(nil, in[fuse.MkdirIn](e), name, o) })
	case opUnlink:
		return 0, fs.Unlink(nil, h, name)
	case opRmdir:
		return 0, fs.Rmdir(nil, h, name)
	case opRename, opRename2:
		n1, n2, ok := cstrings(p)
		if !ok {
			return 0, fuse.EIO
		}
		return 0, fs.Rename(nil, in[fuse.RenameIn](e), n1, n2)
	case opLink:
		return fixed(e, func(o *fuse.EntryOut) fuse.Status { return fs.Link(nil, in[fuse.LinkIn](e), name, o) })
	case opOpen:
		return fixed(e, func(o *fuse.OpenOut) fuse.Status { return fs.Open(nil, in[fuse.OpenIn](e), o) })
	case opOpendir:
		return fixed(e, func(o *fuse.OpenOut) fuse.Status { return fs.OpenDir(nil, in[fuse.OpenIn](e), o) })
	case opCreate:
		return fixed(e, func(o *fuse.CreateOut) fuse.Status { return fs.Create(nil, in[fuse.CreateIn](e), name, o) })
	case opTmpfile:
		return fixed(e, func(o *fuse.CreateOut) fuse.Status { return fs.Tmpfile(nil, in[fuse.CreateIn](e), o) })
	case opRead:
		return e.read(fs)
	case opWrite:
		return e.write(fs, p)
	case opStatfs:
		return fixed(e, func(o *fuse.StatfsOut) fuse.Status { return fs.StatFs(nil, h, o) })
	case opRelease:
		fs.Release(nil, in[fuse.ReleaseIn](e))
		return 0, fuse.OK
	case opReleasedir:
		fs.ReleaseDir(in[fuse.ReleaseIn](e))
		return 0, fuse.OK
	case opFsync:
		return 0, fs.Fsync(nil, in[fuse.FsyncIn](e))
	case opFsyncdir:
		return 0, fs.FsyncDir(nil, in[fuse.FsyncIn](e))
	case opFlush:
		return 0, fs.Flush(nil, in[fuse.FlushIn](e))
	case opSetxattr:
		n, data, ok := cstring(p)
		if !ok {
			return 0, fuse.EINVAL
		}
		return 0, fs.SetXAttr(nil, in[fuse.SetXAttrIn](e), n, bytes.Clone(data))
	case opGetxattr, opListxattr:
		return e.xattr(fs, h, name)
	case opRemovexattr:
		return 0, fs.RemoveXAttr(nil, h, name)
	case opReaddir, opReaddirplus:
		r := in[fuse.ReadIn](e)
		buf := e.payload[:min(int(r.Size), len(e.payload))]
		l := fuse.NewDirEntryList(buf, r.Offset)
		var st fuse.Status
		if h.Opcode == opReaddir {
			st = fs.ReadDir(nil, r, l)
		} else {
			st = fs.ReadDirPlus(nil, r, l)
		}
		if st != fuse.OK {
			return 0, st
		}
		b := l.Bytes()
		if len(b) > 0 && &b[0] != &buf[0] {
			copy(buf, b)
		}
		return len(b), fuse.OK
	case opGetlk:
		return fixed(e, func(o *fuse.LkOut) fuse.Status { return fs.GetLk(nil, in[fuse.LkIn](e), o) })
	case opSetlk:
		return 0, fs.SetLk(nil, in[fuse.LkIn](e))
	case opSetlkw:
		return 0, fs.SetLkw(nil, in[fuse.LkIn](e))
	case opAccess:
		return 0, fs.Access(nil, in[fuse.AccessIn](e))
	case opDestroy:
		return 0, fuse.OK
	case opIoctl:
		return e.ioctl(fs, p)
	case opFallocate:
		return 0, fs.Fallocate(nil, in[fuse.FallocateIn](e))
	case opLseek:
		return fixed(e, func(o *fuse.LseekOut) fuse.Status { return fs.Lseek(nil, in[fuse.LseekIn](e), o) })
	case opCopyFileRange:
		return fixed(e, func(o *fuse.WriteOut) (st fuse.Status) {
			o.Size, st = fs.CopyFileRange(nil, in[fuse.CopyFileRangeIn](e))
			return st
		})
	}
	return 0, fuse.ENOSYS
}

func (e *uringEnt) read(fs fuse.RawFileSystem) (int, fuse.Status) {
	r := in[fuse.ReadIn](e)
	buf := e.payload[:min(int(r.Size), len(e.payload))]
	res, st := fs.Read(nil, r, buf)
	if st != fuse.OK {
		if res != nil {
			res.Done()
		}
		return 0, st
	}
	if res == nil {
		return 0, fuse.OK
	}
	defer res.Done()
	b, st := res.Bytes(buf)
	if st != fuse.OK {
		return 0, st
	}
	if len(b) > 0 && &b[0] != &buf[0] {
		return copy(buf, b), fuse.OK
	}
	return len(b), fuse.OK
}

func (e *uringEnt) write(fs fuse.RawFileSystem, p []byte) (int, fuse.Status) {
	w := in[fuse.WriteIn](e)
	if int(w.Size) < len(p) {
		p = p[:w.Size]
	}
	var one [1][]byte
	one[0] = p
	n, st := fs.Writev(nil, w, one[:])
	if st == fuse.ENOSYS {
		n, st = fs.Write(nil, w, p)
	}
	if st != fuse.OK {
		return 0, st
	}
	o := out[fuse.WriteOut](e)
	o.Size = n
	return reply(e, o), fuse.OK
}

// xattr serves GETXATTR and LISTXATTR as go-fuse does: with size 0 the
// reply is the size needed, otherwise the data.
func (e *uringEnt) xattr(fs fuse.RawFileSystem, h *fuse.InHeader, name string) (int, fuse.Status) {
	g := in[fuse.GetXAttrIn](e)
	dest := e.payload[:min(int(g.Size), len(e.payload))]
	var n uint32
	var st fuse.Status
	if h.Opcode == opGetxattr {
		n, st = fs.GetXAttr(nil, h, name, dest)
	} else {
		n, st = fs.ListXAttr(nil, h, dest)
	}
	if g.Size == 0 {
		if st == fuse.ERANGE {
			st = fuse.OK
		}
		if st != fuse.OK {
			return 0, st
		}
		o := out[fuse.GetXAttrOut](e)
		o.Size = n
		return reply(e, o), fuse.OK
	}
	if st != fuse.OK {
		return 0, st
	}
	return min(int(n), len(dest)), fuse.OK
}

// ioctl passes a copy of the input data (it shares the payload with the
// output) and replies fuse_ioctl_out followed by the output data.
func (e *uringEnt) ioctl(fs fuse.RawFileSystem, p []byte) (int, fuse.Status) {
	c := in[fuse.IoctlIn](e)
	inbuf := bytes.Clone(p[:min(int(c.InSize), len(p))])
	hdr := int(unsafe.Sizeof(fuse.IoctlOut{}))
	outbuf := e.payload[hdr:min(hdr+int(c.OutSize), len(e.payload))]
	clear(outbuf)
	o := out[fuse.IoctlOut](e)
	if st := fs.Ioctl(nil, c, inbuf, o, outbuf); st != fuse.OK {
		return 0, st
	}
	reply(e, o)
	return hdr + len(outbuf), fuse.OK
}

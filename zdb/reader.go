package zdb

// The connection reader: a read buffer for request lines that reads large
// bulk payloads straight into their final buffer.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// bulkTail bounds what is read into the buffer along with or right after
// a large payload: enough for the next request's header lines.
const bulkTail = 4 << 10

// readBufs holds the read buffers of socket connections waiting for
// requests; readBufsHeld counts those taken.
var (
	readBufs     = sync.Pool{New: func() any { return &readBuf{make([]byte, readBufSize)} }}
	readBufsHeld atomic.Int64
)

type readBuf struct{ b []byte }

// connReader is the buffered reader of one connection. Unlike bufio.Reader
// it never copies a payload through its buffer once the buffer is empty:
// the rest of the payload comes with one readv(2) into the destination and
// the read buffer together, so whatever the client already sent after the
// payload (the next pipelined request) arrives in the same call.
//
// A socket connection reads with read(2) on its raw connection. When the
// socket has nothing to read and nothing is buffered, the buffer goes back
// to readBufs before the connection waits, and one is taken again once
// data arrives: a connection waiting for its client holds no read buffer,
// at no extra system call.
type connReader struct {
	src    io.Reader       // plain reads (counted by src itself)
	raw    syscall.RawConn // read and readv; nil when src is not a socket
	rx     *atomic.Int64   // bytes read through raw
	buf    []byte          // nil while a socket connection waits with nothing buffered
	pooled *readBuf        // where buf comes from, when from readBufs
	size   int             // buffer size
	r      int             // read position in buf
	w      int             // write position in buf
	err    error
	// bulk is set after a payload was read past the buffer: the next read
	// into the buffer takes at most bulkTail bytes, since what follows is
	// likely the next large payload, better read in place than copied
	bulk bool

	// read and readv arguments and results, fields so that the callbacks
	// passed to raw.Read are allocated once
	end    int
	rn     int
	rerr   error
	readF  func(fd uintptr) bool
	iov    [2][]byte
	vn     int
	verr   error
	readvF func(fd uintptr) bool
}

// newConnReader reads from src with a buffer of size bytes. When raw is a
// socket's raw connection, reads go through it, counted in rx.
func newConnReader(src io.Reader, raw syscall.RawConn, rx *atomic.Int64, size int) *connReader {
	cr := &connReader{src: src, raw: raw, rx: rx, size: size}
	cr.readF = cr.readRaw
	cr.readvF = cr.readv
	if raw == nil {
		cr.buf = make([]byte, size)
	}
	return cr
}

// hold gives cr a buffer if it has none.
func (cr *connReader) hold() {
	if cr.buf != nil {
		return
	}
	if cr.size == readBufSize {
		readBufsHeld.Add(1) // before the buffer is in use (see letGo)
		cr.pooled = readBufs.Get().(*readBuf)
		cr.buf = cr.pooled.b
	} else {
		cr.buf = make([]byte, cr.size)
	}
	cr.r, cr.w = 0, 0
}

// letGo gives a socket connection's buffer back while nothing is
// buffered, or, with always, in any case (the connection is done).
func (cr *connReader) letGo(always bool) {
	if cr.raw == nil || cr.buf == nil || (cr.r != cr.w && !always) {
		return
	}
	cr.buf = nil
	cr.r, cr.w = 0, 0
	if cr.pooled != nil {
		readBufs.Put(cr.pooled)
		cr.pooled = nil
		// after the buffer is out of use: whoever reads 0 here sees no
		// reader holding one
		readBufsHeld.Add(-1)
	}
}

// reset makes cr read from src, as new, keeping its buffer.
func (cr *connReader) reset(src io.Reader, raw syscall.RawConn) {
	cr.src, cr.raw = src, raw
	cr.r, cr.w, cr.err, cr.bulk = 0, 0, nil, false
}

// rawConn returns the raw connection of a socket, or nil.
func rawConn(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// buffered returns the number of bytes read from the connection and not
// consumed yet.
func (cr *connReader) buffered() int { return cr.w - cr.r }

// fill reads at least one more byte into the buffer, keeping the unread
// bytes.
func (cr *connReader) fill() {
	cr.hold()
	if cr.r > 0 {
		copy(cr.buf, cr.buf[cr.r:cr.w])
		cr.w -= cr.r
		cr.r = 0
	}
	end := len(cr.buf)
	if cr.bulk {
		end = min(end, cr.w+bulkTail)
		cr.bulk = false
	}
	if cr.raw != nil {
		cr.end = end
		if err := cr.raw.Read(cr.readF); err != nil {
			cr.err = err
			return
		}
		switch n, err := cr.rn, cr.rerr; {
		case n > 0:
			cr.w += n
			cr.rx.Add(int64(n))
		case err != nil:
			cr.err = os.NewSyscallError("read", err)
		default:
			cr.err = io.EOF
		}
		return
	}
	for i := 0; i < 100; i++ {
		n, err := cr.src.Read(cr.buf[cr.w:end])
		cr.w += n
		if err != nil {
			cr.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	cr.err = io.ErrNoProgress
}

// readErr returns and clears the sticky read error.
func (cr *connReader) readErr() error {
	err := cr.err
	cr.err = nil
	return err
}

// readSlice is bufio.Reader.ReadSlice: the bytes up to and including delim,
// valid until the next read.
func (cr *connReader) readSlice(delim byte) ([]byte, error) {
	start := 0 // bytes of buf[r:w] already searched
	for {
		if i := bytes.IndexByte(cr.buf[cr.r+start:cr.w], delim); i >= 0 {
			line := cr.buf[cr.r : cr.r+start+i+1]
			cr.r += start + i + 1
			return line, nil
		}
		if cr.err != nil {
			line := cr.buf[cr.r:cr.w]
			cr.r = cr.w
			return line, cr.readErr()
		}
		if cr.buffered() >= cr.size {
			line := cr.buf[cr.r:cr.w]
			cr.r = cr.w
			return line, bufio.ErrBufferFull
		}
		start = cr.buffered()
		cr.fill()
	}
}

// peek returns the next n (≤ buffer size) bytes without consuming them.
func (cr *connReader) peek(n int) ([]byte, error) {
	for cr.buffered() < n && cr.err == nil {
		cr.fill()
	}
	if cr.buffered() < n {
		return cr.buf[cr.r:cr.w], cr.readErr()
	}
	return cr.buf[cr.r : cr.r+n], nil
}

// discard skips n bytes.
func (cr *connReader) discard(n int) error {
	for n > 0 {
		if cr.buffered() == 0 {
			if cr.err != nil {
				return cr.readErr()
			}
			cr.r, cr.w = 0, 0
			cr.fill()
			continue
		}
		k := min(n, cr.buffered())
		cr.r += k
		n -= k
	}
	return nil
}

// readFull fills dst: the buffered bytes first, then straight from the
// connection (readv into dst and the emptied buffer).
func (cr *connReader) readFull(dst []byte) error {
	n := copy(dst, cr.buf[cr.r:cr.w])
	cr.r += n
	dst = dst[n:]
	for len(dst) > 0 {
		if cr.err != nil {
			return cr.readErr()
		}
		cr.r, cr.w = 0, 0
		if cr.raw == nil {
			// no socket: read directly unless the rest is small
			if len(dst) < len(cr.buf) {
				cr.fill()
				n := copy(dst, cr.buf[cr.r:cr.w])
				cr.r += n
				dst = dst[n:]
				continue
			}
			n, err := cr.src.Read(dst)
			dst = dst[n:]
			if err != nil {
				cr.err = err
			}
			continue
		}
		cr.bulk = true
		cr.hold()
		cr.iov[0], cr.iov[1] = dst, cr.buf[:bulkTail]
		if err := cr.raw.Read(cr.readvF); err != nil {
			cr.err = err
			continue
		}
		n, err := cr.vn, cr.verr
		cr.iov[0], cr.iov[1] = nil, nil
		if err != nil {
			cr.err = err
			continue
		}
		if n == 0 {
			cr.err = io.EOF
			continue
		}
		cr.rx.Add(int64(n))
		if n <= len(dst) {
			dst = dst[n:]
			continue
		}
		cr.w = n - len(dst)
		dst = nil
	}
	return nil
}

// readRaw is fill's raw.Read callback: one read(2) into buf[w:end],
// retried on EINTR. On EAGAIN with nothing buffered the buffer goes back
// to the pool while the connection waits for the socket; it is taken
// again (with the same end: r = w = 0) once the socket is readable.
func (cr *connReader) readRaw(fd uintptr) bool {
	for {
		cr.hold()
		n, err := unix.Read(int(fd), cr.buf[cr.w:cr.end])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			cr.letGo(false)
			return false
		}
		cr.rn, cr.rerr = max(n, 0), err
		return true
	}
}

// readv is the raw.Read callback: one readv(2), retried on EINTR, waiting
// for the socket on EAGAIN.
func (cr *connReader) readv(fd uintptr) bool {
	for {
		cr.vn, cr.verr = unix.Readv(int(fd), cr.iov[:])
		if cr.verr == unix.EINTR {
			continue
		}
		return cr.verr != unix.EAGAIN
	}
}

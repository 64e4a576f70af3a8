package zdb

// The connection reader: a read buffer for request lines that reads large
// bulk payloads straight into their final buffer.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// bulkTail bounds what is read into the buffer along with or right after
// a large payload: enough for the next request's header lines.
const bulkTail = 4 << 10

// connReader is the buffered reader of one connection. Unlike bufio.Reader
// it never copies a payload through its buffer once the buffer is empty:
// the rest of the payload comes with one readv(2) into the destination and
// the read buffer together, so whatever the client already sent after the
// payload (the next pipelined request) arrives in the same call.
type connReader struct {
	src io.Reader       // plain reads (counted by src itself)
	raw syscall.RawConn // readv; nil when src is not a socket
	rx  *atomic.Int64   // bytes read through raw
	buf []byte
	r   int // read position in buf
	w   int // write position in buf
	err error
	// bulk is set after a payload was read past the buffer: the next read
	// into the buffer takes at most bulkTail bytes, since what follows is
	// likely the next large payload, better read in place than copied
	bulk bool

	// readv arguments and results, fields so that the callback passed to
	// raw.Read is allocated once
	iov    [2][]byte
	vn     int
	verr   error
	readvF func(fd uintptr) bool
}

// newConnReader reads from src. When raw is a socket's raw connection, the
// rest of a payload is read with readv on it, and counted in rx.
func newConnReader(src io.Reader, raw syscall.RawConn, rx *atomic.Int64, size int) *connReader {
	cr := &connReader{src: src, raw: raw, rx: rx, buf: make([]byte, size)}
	cr.readvF = cr.readv
	return cr
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
		if cr.buffered() >= len(cr.buf) {
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

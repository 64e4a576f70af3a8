package zdb

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Zero-copy GET replies: a large payload goes from the data file's page
// cache to the socket with sendfile(2), so zdb neither reads it into memory
// nor copies it into the socket (unix sockets take the pages by reference
// since Linux 6.5; TCP always has). Before this, each 128 KiB GET cost a
// pread copy and a socket copy.

// filePayload is where a payload lies in a data file.
type filePayload struct {
	f    *os.File
	off  int64
	n    int
	size int64 // of the file when the GET was looked up

	// the next data file, for read-ahead, when the payload lies near the
	// end of a file that is not the last
	next     *os.File
	nextSize int64
}

// payloadInFile locates e's payload for a zero-copy reply and records the
// GET for the data file's read-ahead (readahead.go); ns.mu held for
// reading. ok is false when the payload is small (the copying path is
// cheaper) or the file does not hold all of it (the copying path reports
// the error as it always has).
func (ns *Namespace) payloadInFile(e *entry) (filePayload, bool) {
	if int(e.length) < largeReply {
		return filePayload{}, false
	}
	f, err := ns.file(false, e.dataID)
	if err != nil {
		return filePayload{}, false
	}
	off := int64(e.offset) + dataEntrySize + int64(e.keyLen)
	// one fstat per large GET keeps the reply for a file cut short as it
	// was; a file shrinking between here and sendfile closes the connection
	st, err := f.Stat()
	if err != nil || st.Size() < off+int64(e.length) {
		return filePayload{}, false
	}
	p := filePayload{f: f, off: off, n: int(e.length), size: st.Size()}
	if e.dataID < ns.curID && wantsNext(f, p.off+int64(p.n), p.size) {
		// near the end of a file that has a successor: read-ahead may go
		// on into that one
		if nf, err := ns.openFile(false, e.dataID+1, false); err == nil {
			if nst, err := nf.Stat(); err == nil {
				p.next, p.nextSize = nf, nst.Size()
			}
		}
	}
	// under ns.mu, so the file cannot be closed (and its read-ahead state
	// forgotten) meanwhile
	readAheadFor(p)
	return p, true
}

// sendBulkFile writes the bulk reply of p: the pending buffered replies,
// the length line, the payload by sendfile(2) and the CRLF. An error after
// the length line leaves a broken reply, so the caller closes the
// connection.
func (c *session) sendBulkFile(p filePayload) error {
	if err := c.w.Flush(); err != nil {
		return err
	}
	var hdr [24]byte
	h := append(hdr[:0], '$')
	h = strconv.AppendInt(h, int64(p.n), 10)
	h = append(h, '\r', '\n')
	if _, err := c.nc.Write(h); err != nil {
		return err
	}
	nc := c.nc
	if cc, ok := nc.(countingConn); ok {
		nc = cc.Conn
	}
	sc, ok := nc.(rawConner)
	if !ok {
		return errors.New("connection has no file descriptor")
	}
	sent, err := sendfile(sc, p)
	c.srv.store.stats.netTx.Add(sent)
	c.srv.store.stats.dataRead.Add(sent)
	if err != nil {
		return fmt.Errorf("send %d bytes at %d of %s: %w", p.n, p.off, p.f.Name(), err)
	}
	_, err = c.nc.Write([]byte("\r\n"))
	return err
}

// rawConner is a connection that exposes its file descriptor.
type rawConner interface {
	SyscallConn() (syscall.RawConn, error)
}

// sendfile copies p to dst (a socket, or /dev/null for read-ahead) inside
// the kernel, waiting for a socket to drain like a write does (and
// honouring its deadline).
func sendfile(sc rawConner, p filePayload) (int64, error) {
	dst, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	src, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var sent int64
	var serr error
	off, left := p.off, p.n
	// Control holds a reference on the data file, so a concurrent close
	// (rotation, NSDEL, FLUSH) cannot recycle the descriptor meanwhile.
	cerr := src.Control(func(ffd uintptr) {
		werr := dst.Write(func(sfd uintptr) bool {
			for left > 0 {
				n, err := unix.Sendfile(int(sfd), int(ffd), &off, left)
				if n > 0 {
					sent += int64(n)
					left -= n
				}
				switch {
				case err == unix.EAGAIN:
					return false // wait until the socket is writable
				case err == unix.EINTR:
				case err != nil:
					serr = err
					return true
				case n == 0:
					serr = io.ErrUnexpectedEOF
					return true
				}
			}
			return true
		})
		if serr == nil {
			serr = werr
		}
	})
	if serr == nil {
		serr = cerr
	}
	return sent, serr
}

package zdb

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The prefetcher of a data file: a goroutine that reads the file from r.pos
// up to r.asked in aligned chunks, on its own descriptor, so the kernel's
// read-ahead state of that descriptor sees one plain sequential reader. The
// GETs' reads (sendfile on the shared descriptor) then find the pages in
// the page cache. The chunks are read by splice(2) into a pipe and dropped
// into /dev/null: nothing is copied. sendfile(2) to /dev/null was measured
// too: it goes through a 64 KiB internal pipe, and the kernel then starts a
// resumed stream with a 256 KiB window.

// startLocked starts the prefetcher if want and none runs; r.mu held.
func (r *readAhead) startLocked(want bool) {
	if want && !r.busy && !r.stopped {
		r.busy = true
		go r.prefetch()
	}
}

// prefetch reads the file from r.pos up to r.asked, then returns; the GETs
// start it again when the stream moves on. Its reads wait for the disk, so
// it runs on a goroutine of its own.
func (r *readAhead) prefetch() {
	p, err := newDropPipe()
	r.mu.Lock()
	if err == nil && r.own == nil && !r.stopped {
		r.own, err = os.Open(r.f.Name())
		if err == nil {
			// twice the kernel's read-ahead window for this reader only
			// (8 of 11 interleaved cold reads faster, one even)
			unix.Fadvise(int(r.own.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
		}
	}
	for err == nil && !r.stopped && r.pos < r.asked {
		off, n := r.pos, int(min(raChunk, r.asked-r.pos))
		r.pos += int64(n)
		f := r.own
		r.mu.Unlock()
		err = p.read(f, off, n)
		r.mu.Lock()
	}
	if err != nil {
		// a file cut short or gone: the GETs read alone from now on
		r.stopped = true
	}
	r.busy = false
	if r.stopped && r.own != nil {
		r.own.Close()
		r.own = nil
	}
	r.mu.Unlock()
	p.close()
}

// devNull is where the prefetcher's reads go.
var devNull = sync.OnceValues(func() (*os.File, error) {
	return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
})

// dropPipe reads file ranges into the page cache without copying them:
// splice(2) moves references to the pages into the pipe, and a second
// splice drops them into /dev/null. The pipe holds a whole chunk, so each
// read asks the kernel for the whole chunk at once, which sizes its
// read-ahead window.
type dropPipe struct {
	r, w int
	null *os.File
}

func newDropPipe() (dropPipe, error) {
	null, err := devNull()
	if err != nil {
		return dropPipe{}, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return dropPipe{}, fmt.Errorf("pipe: %w", err)
	}
	// a smaller pipe (an unprivileged zdb above pipe-max-size) only means
	// smaller reads
	unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, raChunk)
	return dropPipe{r: fds[0], w: fds[1], null: null}, nil
}

func (p dropPipe) close() {
	if p.null != nil {
		unix.Close(p.r)
		unix.Close(p.w)
	}
}

// read reads [off, off+n) of f into the page cache.
func (p dropPipe) read(f *os.File, off int64, n int) error {
	src, err := f.SyscallConn()
	if err != nil {
		return err
	}
	dst, err := p.null.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	// Control holds references on both files, so a concurrent close cannot
	// recycle their descriptors meanwhile
	cerr := src.Control(func(ffd uintptr) {
		if err := dst.Control(func(nfd uintptr) { rerr = p.move(int(ffd), int(nfd), off, n) }); err != nil {
			rerr = err
		}
	})
	if rerr == nil {
		rerr = cerr
	}
	if rerr != nil {
		return fmt.Errorf("read ahead %d bytes at %d of %s: %w", n, off, f.Name(), rerr)
	}
	return nil
}

// move splices [off, off+n) of file descriptor ffd through the pipe into
// nfd.
func (p dropPipe) move(ffd, nfd int, off int64, n int) error {
	for n > 0 {
		m, err := unix.Splice(ffd, &off, p.w, nil, n, unix.SPLICE_F_MOVE)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case m == 0:
			return io.ErrUnexpectedEOF
		}
		n -= int(m)
		for left := int(m); left > 0; {
			d, err := unix.Splice(p.r, nil, nfd, nil, left, unix.SPLICE_F_MOVE)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				return err
			case d == 0:
				return io.ErrShortWrite
			}
			left -= int(d)
		}
	}
	return nil
}

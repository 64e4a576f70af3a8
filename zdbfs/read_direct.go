package zdbfs

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/qsfs/qsfs/zdb/client"
)

// Direct reads: a READ that covers whole blocks none of which is cached or
// being read has the GET payloads read from the zdb socket straight into
// the FUSE reply buffer at their offsets, instead of into block buffers
// that are then copied into the reply. The kernel keeps the bytes in its
// page cache, so the block cache would only hold a second copy; the
// kernel's own read-ahead keeps several such READs in flight, which
// pipelines zdb and the copies into the page cache.

// streaming reports whether a READ at off continues a sequential read of n
// (at or ahead of where the last READ ended, within the kernel's read-ahead
// window). Only those are read in place: the kernel's page cache keeps what
// a stream read, while a READ behind the stream or elsewhere (a re-read,
// random access) goes through the block cache, which serves the next one.
// n.mu held.
func (fs *FS) streaming(n *node, off uint64) bool {
	return off >= n.lastRead && off-n.lastRead <= 4*max(streamWindow, fs.opts.Readahead)
}

// streamWindow is the smallest read-ahead window assumed. The kernel starts
// the next read-ahead window while the READs of the current one are still
// under way, so READs of one stream arrive up to about two windows ahead of
// the end of the last one answered (measured: 5 MiB with readahead=4M);
// four windows leave room.
const streamWindow = 4 << 20

// directBlocks reports whether READ [off, end) can be served by readDirect:
// it starts on a block boundary, ends on one or at the end of the file, and
// every block in it is stored in zdb, not cached, not being read and not
// being written. n.mu held.
func (fs *FS) directBlocks(n *node, off, end uint64) bool {
	if off%blockSize != 0 || (end%blockSize != 0 && end != n.attr.Size) {
		return false
	}
	for idx := uint32(off / blockSize); uint64(idx)*blockSize < end; idx++ {
		if n.cache[idx] != nil || n.inflight[idx] != nil || n.blockID(idx) == 0 {
			return false
		}
	}
	return true
}

// readDirect fills buf (file bytes [off, off+len(buf))) from zdb, the
// payload of each block read in place. A block written, truncated or
// rewritten in place while its GET was under way is read again through the
// block cache, as readAt would. n.mu held on entry and return, released
// while waiting for zdb.
func (fs *FS) readDirect(n *node, buf []byte, off uint64) syscall.Errno {
	first := uint32(off / blockSize)
	count := (len(buf) + blockSize - 1) / blockSize
	if n.inflight == nil {
		n.inflight = map[uint32]*fetch{}
	}
	ids := make([]uint64, count)
	fetches := make([]*fetch, count)
	for k := range ids {
		idx := first + uint32(k)
		ids[k] = uint64(n.blockID(idx))
		fetches[k] = &fetch{done: make(chan struct{})}
		n.inflight[idx] = fetches[k]
	}
	fs.add(&fs.stats.cacheMiss, uint64(count))
	// dst is the part of buf block k maps to
	dst := func(k int) []byte { return buf[k*blockSize : min((k+1)*blockSize, len(buf))] }
	alloc := func(k, size int) []byte {
		if d := dst(k); size <= len(d) {
			return d[:size]
		}
		return blockAlloc(size) // longer than the file says: copied below
	}
	n.mu.Unlock()
	got := func(k int, r client.Reply) error {
		if err := r.Err(); err != nil {
			return fmt.Errorf("get %s id %d: %w", fs.b.data.b.Namespace, ids[k], err)
		}
		d := dst(k)
		c := 0
		if !r.Nil {
			c = len(r.Str)
			if c > 0 && &r.Str[0] != &d[0] {
				c = copy(d, r.Str)
				putBuf(r.Str)
			}
		}
		clear(d[c:])
		return nil
	}
	// get reads blocks [from, to) on one connection
	get := func(from, to int) error {
		return fs.b.data.pipelineInto(to-from, func(k, size int) []byte { return alloc(from+k, size) }, func(k int) []any {
			return []any{"GET", client.SeqKey(ids[from+k])}
		}, func(k int, r client.Reply) error { return got(from+k, r) })
	}
	err := splitGets(count, get)
	n.mu.Lock()
	var stale []uint32
	for k, f := range fetches {
		idx := first + uint32(k)
		f.err = err
		if n.inflight[idx] == f {
			delete(n.inflight, idx)
			if n.cache[idx] != nil || uint64(n.blockID(idx)) != ids[k] {
				stale = append(stale, uint32(k))
			}
		} else {
			stale = append(stale, uint32(k))
		}
		close(f.done)
	}
	if err != nil {
		return errno(err)
	}
	for _, k := range stale {
		if e := fs.copyBlock(n, first+k, 0, dst(int(k))); e != 0 {
			return e
		}
	}
	return 0
}

// getSplit is how many connections the GETs of one READ are spread over,
// at least two blocks each. zdb answers the requests of one connection one
// after the other, each large GET waiting for its data-file read when the
// data is not in the page cache; on two connections, two of them wait for
// the disk at once (measured, cold 1 GiB read: 1,120 -> 1,545 MB/s; four
// connections were no faster and cost zdb more CPU).
const getSplit = 2

// splitGets runs get over [0, count) in up to getSplit parts at once and
// returns their errors joined.
func splitGets(count int, get func(from, to int) error) error {
	parts := min(getSplit, count/2)
	if parts <= 1 {
		return get(0, count)
	}
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := 1; p < parts; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = get(p*count/parts, (p+1)*count/parts)
		}()
	}
	errs[0] = get(0, count/parts)
	wg.Wait()
	return errors.Join(errs...)
}

// copyBlock copies block idx from byte in on into dst through the block
// cache, reading the block first if needed; n.mu held.
func (fs *FS) copyBlock(n *node, idx uint32, in uint64, dst []byte) syscall.Errno {
	b := n.cache[idx]
	if b == nil || b.sending != nil {
		// evicted, truncated or rewritten while we waited: read it again
		if e := fs.readBlocks(n, idx, idx, 0); e != 0 {
			return e
		}
		if b = n.cache[idx]; b == nil || b.sending != nil {
			return syscall.EIO
		}
	}
	c := 0
	if in < uint64(len(b.data)) {
		c = copy(dst, b.data[in:])
	}
	clear(dst[c:])
	fs.touch(n, idx, b)
	return 0
}

package zdbfs

import (
	"container/list"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/qsfs/qsfs/zdbfs/layout"
)

const blockSize = layout.BlockSize

// maxBlocks keeps a file's inode record under the 8 MiB value limit of 0-db.
const maxBlocks = (8<<20 - layout.InodeSize - 8) / 4

// block is one cached 128 KiB block of a file.
type block struct {
	data     []byte // valid bytes of the block
	dirty    bool
	gen      uint64        // bumped on every change
	elem     *list.Element // position in the clean LRU (guarded by FS.cacheMu)
	flushing bool
	// sending is non-nil while the block's new bytes go to zdb straight
	// from a FUSE request (write_direct.go): the block holds no data then,
	// and whoever needs its contents waits until the channel is closed.
	sending chan struct{}
}

type lruRef struct {
	n   *node
	idx uint32
	b   *block
}

// fetch is a block read in progress.
type fetch struct {
	done chan struct{}
	err  error
}

func (fs *FS) account(delta int64) { atomic.AddInt64(&fs.cacheBytes, delta) }

// blockPool recycles full-size block buffers.
var blockPool = sync.Pool{New: func() any { b := make([]byte, blockSize); return &b }}

func getBuf() []byte { return (*blockPool.Get().(*[]byte))[:0] }

// blockAlloc gives a block read from zdb a recycled block buffer instead of
// a freshly allocated (and zeroed) one; see client.Conn.SetBulkAlloc.
func blockAlloc(n int) []byte {
	if n > blockSize {
		return make([]byte, n)
	}
	return getBuf()[:n]
}

// putBuf recycles a buffer no one else references.
func putBuf(b []byte) {
	if cap(b) == blockSize {
		b = b[:0]
		blockPool.Put(&b)
	}
}

// setClean puts b in the clean LRU (or refreshes its position).
func (fs *FS) touch(n *node, idx uint32, b *block) {
	fs.cacheMu.Lock()
	if b.dirty {
		if b.elem != nil {
			fs.lru.Remove(b.elem)
			b.elem = nil
		}
	} else if b.elem != nil {
		fs.lru.MoveToBack(b.elem)
	} else {
		b.elem = fs.lru.PushBack(lruRef{n, idx, b})
	}
	fs.cacheMu.Unlock()
}

func (fs *FS) untrack(b *block) {
	fs.cacheMu.Lock()
	if b.elem != nil {
		fs.lru.Remove(b.elem)
		b.elem = nil
	}
	fs.cacheMu.Unlock()
}

// markDirty flags a block modified; n.mu held.
func (fs *FS) markDirty(n *node, b *block) {
	b.gen++
	if !b.dirty {
		b.dirty = true
		atomic.AddInt64(&fs.dirtyBytes, blockSize)
		fs.untrack(b)
		fs.dirtyMu.Lock()
		fs.dirtyData[n] = struct{}{}
		fs.dirtyMu.Unlock()
	}
}

// dropBlocks forgets cached blocks from index from on; n.mu held.
func (fs *FS) dropBlocks(n *node, from uint32) {
	for idx, b := range n.cache {
		if idx < from {
			continue
		}
		if b.dirty {
			atomic.AddInt64(&fs.dirtyBytes, -blockSize)
			b.dirty = false
		}
		fs.untrack(b)
		fs.account(-int64(cap(b.data)))
		delete(n.cache, idx)
		if !b.flushing {
			putBuf(b.data)
		}
		b.data = nil
	}
}

// evict drops clean blocks until the cache fits its budget. It must be
// called without any node lock held.
func (fs *FS) evict() {
	for atomic.LoadInt64(&fs.cacheBytes) > fs.budget {
		fs.cacheMu.Lock()
		e := fs.lru.Front()
		if e == nil {
			fs.cacheMu.Unlock()
			return
		}
		ref := e.Value.(lruRef)
		fs.lru.Remove(e)
		ref.b.elem = nil
		fs.cacheMu.Unlock()
		ref.n.mu.Lock()
		if cur := ref.n.cache[ref.idx]; cur == ref.b && !cur.dirty && !cur.flushing {
			fs.untrack(cur)
			delete(ref.n.cache, ref.idx)
			fs.account(-int64(cap(cur.data)))
			putBuf(cur.data)
			cur.data = nil
		}
		ref.n.mu.Unlock()
	}
}

// blockID returns the data id of block idx; n.mu held.
func (n *node) blockID(idx uint32) uint32 {
	if int(idx) < len(n.blocks) {
		return n.blocks[idx]
	}
	return 0
}

// readBlocks makes sure blocks [first, last] are cached, fetching the missing
// ones in one pipeline, plus ahead more blocks for read-ahead. n.mu is held
// on entry and on return but released while waiting for zdb.
func (fs *FS) readBlocks(n *node, first, last uint32, ahead uint32) syscall.Errno {
	for {
		var want []uint32
		var wait *fetch
		var sending chan struct{}
		end := last + ahead
		for idx := first; idx <= end; idx++ {
			if b := n.cache[idx]; b != nil {
				if b.sending != nil {
					if idx <= last && sending == nil {
						sending = b.sending
					}
					continue
				}
				if idx <= last {
					fs.add(&fs.stats.cacheHit, 1)
				}
				continue
			}
			if idx <= last {
				fs.add(&fs.stats.cacheMiss, 1)
			}
			if f := n.inflight[idx]; f != nil {
				if idx <= last && wait == nil {
					wait = f
				}
				continue
			}
			if n.blockID(idx) == 0 {
				if idx <= last {
					// hole or not yet written: an empty block
					b := &block{}
					n.cache[idx] = b
					fs.touch(n, idx, b)
				}
				continue
			}
			if idx > last && fs.prefetchBudgetLow() {
				break
			}
			want = append(want, idx)
		}
		if len(want) == 0 && wait == nil && sending == nil {
			return 0
		}
		if len(want) > 0 {
			fs.fetchBlocks(n, want, last)
			continue
		}
		if sending != nil {
			// a direct write of the block is on its way to zdb
			n.mu.Unlock()
			<-sending
			n.mu.Lock()
			continue
		}
		n.mu.Unlock()
		<-wait.done
		n.mu.Lock()
		if wait.err != nil {
			return errno(wait.err)
		}
	}
}

func (fs *FS) prefetchBudgetLow() bool {
	return atomic.LoadInt64(&fs.cacheBytes) > fs.budget*3/4
}

// fetchBlocks reads the given blocks; those up to last are waited for, the
// rest are read in the background. n.mu held on entry and return.
func (fs *FS) fetchBlocks(n *node, want []uint32, last uint32) {
	if n.inflight == nil {
		n.inflight = map[uint32]*fetch{}
	}
	ids := make([]uint64, len(want))
	fetches := make([]*fetch, len(want))
	for k, idx := range want {
		ids[k] = uint64(n.blockID(idx))
		fetches[k] = &fetch{done: make(chan struct{})}
		n.inflight[idx] = fetches[k]
	}
	// split: blocks needed now are read synchronously, read-ahead in the background
	split := len(want)
	for k, idx := range want {
		if idx > last {
			split = k
			break
		}
	}
	if split < len(want) {
		// read-ahead in chunks of 8 blocks over several connections
		for c := split; c < len(want); c += 8 {
			e := min(c+8, len(want))
			fs.prefetch(n, want[c:e], ids[c:e], fetches[c:e])
		}
		want, ids, fetches = want[:split], ids[:split], fetches[:split]
	}
	if len(want) == 0 {
		return
	}
	n.mu.Unlock()
	vals, err := fs.b.data.getMany(ids)
	n.mu.Lock()
	fs.fetched(n, want, ids, fetches, vals, err)
}

// prefetch reads blocks in the background into n's cache.
func (fs *FS) prefetch(n *node, bg []uint32, bgIDs []uint64, bgF []*fetch) {
	go func() {
		vals, err := fs.b.data.getMany(bgIDs)
		n.mu.Lock()
		fs.fetched(n, bg, bgIDs, bgF, vals, err)
		n.mu.Unlock()
		fs.evict()
	}()
}

// fetched completes the fetches of blocks idxs (zdb ids ids) with the values
// read, caching each block that is still wanted and still maps to the id it
// was read for. n.mu must be held.
func (fs *FS) fetched(n *node, idxs []uint32, ids []uint64, fetches []*fetch, vals [][]byte, err error) {
	for k, idx := range idxs {
		f := fetches[k]
		f.err = err
		if err == nil && n.inflight[idx] == f && n.cache[idx] == nil && uint64(n.blockID(idx)) == ids[k] {
			b := &block{data: vals[k]}
			n.cache[idx] = b
			fs.account(int64(cap(b.data)))
			fs.touch(n, idx, b)
		} else if err == nil && k < len(vals) {
			putBuf(vals[k]) // not kept: nobody else has it
		}
		if n.inflight[idx] == f {
			delete(n.inflight, idx)
		}
		close(f.done)
	}
}

// readAt copies file data at off into buf; n.mu held.
func (fs *FS) readAt(n *node, buf []byte, off uint64) (int, syscall.Errno) {
	size := n.attr.Size
	if off >= size || len(buf) == 0 {
		return 0, 0
	}
	end := min(off+uint64(len(buf)), size)
	first, last := uint32(off/blockSize), uint32((end-1)/blockSize)
	if fs.streaming(n, off) && fs.directBlocks(n, off, end) {
		if e := fs.readDirect(n, buf[:end-off], off); e != 0 {
			return 0, e
		}
		n.lastRead = max(n.lastRead, end)
		return int(end - off), 0
	}
	// read ahead for small sequential READs; READs of a block or more come
	// from the kernel's own read-ahead, which already keeps the next ones
	// in flight (and blocks fetched ahead of them would turn their direct
	// reads into copies out of the cache)
	var ahead uint32
	if !fs.opts.NoCache && len(buf) < blockSize && off+4<<20 >= n.lastRead && off <= n.lastRead+4<<20 {
		ahead = 32
		if maxIdx := uint32((size - 1) / blockSize); last+ahead > maxIdx {
			ahead = maxIdx - last
		}
	}
	if e := fs.readBlocks(n, first, last, ahead); e != 0 {
		return 0, e
	}
	total := int(end - off)
	for p := off; p < end; {
		idx := uint32(p / blockSize)
		in := p % blockSize
		chunk := min(blockSize-in, end-p)
		if e := fs.copyBlock(n, idx, in, buf[p-off:p-off+chunk]); e != 0 {
			return 0, e
		}
		p += chunk
	}
	n.lastRead = end
	return total, 0
}

// writeAt stores data at off; n.mu held. It returns the indexes of blocks
// that became full, for write-behind.
func (fs *FS) writeAt(n *node, data []byte, off uint64) ([]uint32, syscall.Errno) {
	end := off + uint64(len(data))
	if end/blockSize >= maxBlocks {
		return nil, syscall.EFBIG
	}
	var full []uint32
	for p := off; p < end; {
		idx := uint32(p / blockSize)
		in := p % blockSize
		chunk := min(blockSize-in, end-p)
		b := n.cache[idx]
		if b != nil && b.sending != nil {
			// a direct write of this block is in flight: wait for it,
			// then look again
			n.mu.Unlock()
			<-b.sending
			n.mu.Lock()
			continue
		}
		if b == nil {
			covers := in == 0 && chunk == blockSize
			if !covers && n.blockID(idx) != 0 {
				if e := fs.readBlocks(n, idx, idx, 0); e != 0 {
					return full, e
				}
				b = n.cache[idx]
			}
			if b == nil {
				b = &block{}
				n.cache[idx] = b
			}
		}
		need := int(in + chunk)
		if b.flushing {
			// the block's bytes are being sent to zdb: copy on write
			nb := getBuf()[:len(b.data)]
			copy(nb, b.data)
			fs.account(int64(cap(nb) - cap(b.data)))
			b.data = nb
		}
		if need > len(b.data) {
			if need > cap(b.data) {
				var nb []byte
				if need > blockSize/4 || cap(b.data) >= blockSize/8 {
					nb = getBuf()[:need]
					if uint64(len(b.data)) < in {
						clear(nb[len(b.data):in])
					}
				} else {
					// small files stay small in memory
					nb = make([]byte, need, min(2*need, blockSize))
				}
				copy(nb, b.data)
				if !b.flushing && cap(b.data) == blockSize {
					putBuf(b.data)
				}
				fs.account(int64(cap(nb) - cap(b.data)))
				b.data = nb
			} else {
				old := len(b.data)
				b.data = b.data[:need]
				clear(b.data[old:])
			}
		}
		copy(b.data[in:], data[p-off:p-off+chunk])
		fs.markDirty(n, b)
		if in+chunk == blockSize {
			full = append(full, idx)
		}
		p += chunk
	}
	fs.grow(n, end)
	return full, 0
}

// grow records that the file was written up to end: the block list covers
// it, the size includes it and, without the writeback cache, the times are
// stamped; n.mu held.
func (fs *FS) grow(n *node, end uint64) {
	if want := int((end + blockSize - 1) / blockSize); want > len(n.blocks) {
		if want <= cap(n.blocks) {
			old := len(n.blocks)
			n.blocks = n.blocks[:want]
			clear(n.blocks[old:])
		} else {
			// amortized growth: a file written sequentially does not copy
			// its whole block list on every write
			nb := make([]uint32, want, want+want/4)
			copy(nb, n.blocks)
			n.blocks = nb
		}
	}
	if end > n.attr.Size {
		n.attr.Size = end
	}
	if !fs.opts.writeback() {
		// with the writeback cache the kernel owns mtime and ctime and
		// sends them with SETATTR when it writes the inode back; stamping
		// the write-back time here would disagree with what it showed
		t := now()
		n.attr.Mtime, n.attr.Ctime = t, t
	}
}

// truncate sets the file size; n.mu held.
func (fs *FS) truncate(n *node, size uint64) syscall.Errno {
	if size/blockSize >= maxBlocks {
		return syscall.EFBIG
	}
	if n.cache == nil {
		n.cache = map[uint32]*block{}
	}
	if size < n.attr.Size {
		keep := uint32((size + blockSize - 1) / blockSize)
		if size%blockSize != 0 {
			idx := uint32(size / blockSize)
			if e := fs.readBlocks(n, idx, idx, 0); e != 0 {
				return e
			}
			if b := n.cache[idx]; b != nil && uint64(len(b.data)) > size%blockSize {
				b.data = b.data[:size%blockSize]
				fs.markDirty(n, b)
			}
		}
		fs.dropBlocks(n, keep)
		if int(keep) < len(n.blocks) {
			var dead []uint64
			for _, id := range n.blocks[keep:] {
				if id != 0 {
					dead = append(dead, uint64(id))
				}
			}
			n.blocks = n.blocks[:keep:keep]
			fs.dirtyMu.Lock()
			fs.delData = append(fs.delData, dead...)
			fs.dirtyMu.Unlock()
		}
	}
	n.attr.Size = size
	return 0
}

package zdbfs

import (
	"sync"
	"sync/atomic"
	"syscall"
)

// Handing fetched blocks to the kernel's page cache (FUSE_NOTIFY_STORE).
//
// A READ smaller than a block (random reads) makes zdbfs fetch the whole
// block from zdb but answer only the pages asked for: the next READ
// elsewhere in the block costs another round trip, and another fetch once
// the block has left zdbfs's cache. So when a block is read partially for
// the second time (the access pattern shows reuse; a single pass over a
// large file never pays for it), zdbfs also stores the rest of the block
// into the kernel's page cache, where later reads of those pages cost no
// request at all.
//
// The kernel copies stored data over whatever its cache holds, dirty pages
// included, and extends the file if the data reaches past its end. So a
// store happens only while no handle open for writing exists on the inode
// (a writer's dirty pages are written back at close, before its RELEASE;
// those of a shared mapping when it is unmapped), and only if nothing was
// opened or closed for writing and nothing was truncated since the block
// was copied (a generation counter). Both are checked under the lock of
// the inode's stripe, which opening or closing for writing and truncating
// take exclusively, so a store in flight is in the page cache before a
// writer's OPEN is answered. A truncate takes it after the size changed,
// without n.mu: a store copied before lands before the SETATTR is answered,
// and the kernel then drops the pages of a file whose size changed
// (fuse_do_setattr), or finds the new generation and gives up. The lock is
// never held across a zdb round trip, and only files of one stripe share
// it. Stores run in their own goroutine once the READ is answered: the
// kernel keeps that READ's pages locked until then, and a store waits for
// locked pages.

// seenBits sizes the table of recently read blocks (2^seenBits keys).
const seenBits = 14

// storeStripes is how many locks the inodes are spread over.
const storeStripes = 64

// pageStore is the bookkeeping of page cache stores.
type pageStore struct {
	stripes [storeStripes]storeStripe
	// seen holds (inode, block) keys of recent partial READs, one per
	// slot: a hit means the block is read again
	seen [1 << seenBits]atomic.Uint64
}

// storeStripe guards the stores of the inodes ino%storeStripes.
type storeStripe struct {
	mu      sync.RWMutex
	writers map[uint64]int // handles open for writing, per inode
	gen     atomic.Uint64  // bumped by write opens and closes and truncates
}

// storeJob is the rest of one block, to be stored once the READ is answered.
type storeJob struct {
	ino  uint64
	gen  uint64
	runs []pageRun
}

// pageRun is data for the page cache at off.
type pageRun struct {
	off  uint64
	data []byte
}

func isWrite(openFlags uint32) bool {
	return openFlags&syscall.O_ACCMODE != syscall.O_RDONLY
}

func (p *pageStore) stripe(ino uint64) *storeStripe { return &p.stripes[ino%storeStripes] }

// opened records a handle of ino opened with flags.
func (p *pageStore) opened(ino uint64, flags uint32) {
	if !isWrite(flags) {
		return
	}
	s := p.stripe(ino)
	s.mu.Lock()
	if s.writers == nil {
		s.writers = map[uint64]int{}
	}
	s.writers[ino]++
	s.gen.Add(1)
	s.mu.Unlock()
}

// closed records the release of a handle of ino opened with flags.
func (p *pageStore) closed(ino uint64, flags uint32) {
	if !isWrite(flags) {
		return
	}
	s := p.stripe(ino)
	s.mu.Lock()
	if s.writers[ino] > 1 {
		s.writers[ino]--
	} else {
		delete(s.writers, ino)
	}
	s.gen.Add(1)
	s.mu.Unlock()
}

// resized records a size change of ino, once it is done and before it is
// answered: it waits for the stores in flight and voids those copied
// before. n.mu must not be held (a store may wait for pages whose READ
// waits for n.mu).
func (p *pageStore) resized(ino uint64) {
	s := p.stripe(ino)
	s.mu.Lock()
	s.gen.Add(1)
	s.mu.Unlock()
}

// again reports whether block idx of ino was read partially not long ago,
// and remembers that it is read now.
func (p *pageStore) again(ino uint64, idx uint32) bool {
	key := ino<<32 | uint64(idx) // ids are 32-bit, and ino > 0
	slot := &p.seen[(key*0x9e3779b97f4a7c15)>>(64-seenBits)]
	if slot.Load() == key {
		return true
	}
	slot.Store(key)
	return false
}

// storeRest returns the job that stores the cached rest of the block read
// by a READ of [off, off+k), when the block is read again, k is less than
// a block and the READ stays inside it; n.mu held.
func (fs *FS) storeRest(n *node, off, k uint64) *storeJob {
	if fs.opts.NoCache || fs.opts.NoPageStore || fs.server == nil || k == 0 || k >= blockSize {
		return nil
	}
	idx := uint32(off / blockSize)
	if uint32((off+k-1)/blockSize) != idx || !fs.pages.again(n.ino, idx) {
		return nil
	}
	b := n.cache[idx]
	if b == nil || b.sending != nil {
		return nil
	}
	job := &storeJob{ino: n.ino, gen: fs.pages.stripe(n.ino).gen.Load()}
	start := uint64(idx) * blockSize
	for _, r := range restRanges(off, k, n.attr.Size) {
		d := make([]byte, r[1]-r[0])
		if r[0]-start < uint64(len(b.data)) {
			copy(d, b.data[r[0]-start:])
		}
		job.runs = append(job.runs, pageRun{off: r[0], data: d})
	}
	if len(job.runs) == 0 {
		return nil
	}
	return job
}

// store hands job to the kernel unless a writer appeared or the file
// changed since it was copied.
func (fs *FS) store(job *storeJob) {
	s := fs.pages.stripe(job.ino)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.writers[job.ino] > 0 || s.gen.Load() != job.gen {
		return
	}
	for _, r := range job.runs {
		// ENOENT: the kernel forgot the inode meanwhile; nothing to do
		fs.server.InodeNotifyStoreCache(job.ino, int64(r.off), r.data)
	}
}

// restRanges returns the parts of the block holding [off, off+k) that lie
// outside that READ's pages and inside a file of size bytes. A READ may
// have been answered from a size that a truncate changed while it waited
// for zdb (n.mu released): nothing past size is ever returned.
func restRanges(off, k, size uint64) [][2]uint64 {
	const page = 4096
	start := off / blockSize * blockSize
	end := min(start+blockSize, size)
	if start >= end {
		return nil
	}
	lo, hi := min(off&^(page-1), end), min((off+k+page-1)&^(page-1), end)
	var out [][2]uint64
	if start < lo {
		out = append(out, [2]uint64{start, lo})
	}
	if hi < end {
		out = append(out, [2]uint64{hi, end})
	}
	return out
}

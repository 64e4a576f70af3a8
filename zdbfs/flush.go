package zdbfs

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/qsfs/qsfs/zdbfs/layout"
)

// Write-back order, which keeps the tree in zdb consistent at every point:
//  1. data blocks (new blocks get their ids; blocks write-behind failed
//     to store are retried, so their error reaches fsync),
//  2. inode records of files and of directories whose dirlists did not
//     change (they now name their blocks; new inodes exist before any
//     dirlist names them),
//  3. new dirlist buckets get ids (an "L" placeholder, which reads back as
//     empty), the changed directories' inodes are written, then the
//     dirlist contents, leaving out names of inodes created after the
//     cycle began,
//  4. deletes queued before the cycle started (unlinked inodes, their
//     blocks and dirlists, truncated blocks).

// bjob is one block write by write-behind or write-back.
type bjob struct {
	blockSet
	n   *node
	b   *block
	gen uint64
}

// collectJobs prepares writes of n's dirty blocks (all when idxs is nil).
func (fs *FS) collectJobs(n *node, idxs []uint32, out []*bjob) []*bjob {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reaped {
		return out
	}
	add := func(idx uint32, b *block) {
		if b == nil || !b.dirty || b.flushing {
			return
		}
		b.flushing = true
		n.flushing++
		data := b.data
		if want := n.attr.Size - min(n.attr.Size, uint64(idx)*blockSize); uint64(len(data)) > want {
			data = data[:want]
		}
		// no copy: writers copy the block before changing it while it is flushing
		out = append(out, &bjob{blockSet: blockSet{ino: n.ino, idx: idx, data: data, id: n.blockID(idx)}, n: n, b: b, gen: b.gen})
	}
	if idxs == nil {
		for idx, b := range n.cache {
			add(idx, b)
		}
	} else {
		for _, idx := range idxs {
			add(idx, n.cache[idx])
		}
	}
	return out
}

// runJobs writes blocks over up to 4 connections at once and applies the
// results.
func (fs *FS) runJobs(jobs []*bjob) error {
	if len(jobs) == 0 {
		return nil
	}
	parts := min(4, (len(jobs)+7)/8)
	var wg sync.WaitGroup
	per := (len(jobs) + parts - 1) / parts
	for start := 0; start < len(jobs); start += per {
		part := jobs[start:min(start+per, len(jobs))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sets := make([]*blockSet, len(part))
			for i, j := range part {
				sets[i] = &j.blockSet
			}
			fs.b.data.setBlocks(sets)
		}()
	}
	wg.Wait()
	return fs.applyJobs(jobs)
}

// applyJobs applies the results of block writes (runJobs, sendDirect) and
// returns the first error of a block still in the file.
func (fs *FS) applyJobs(jobs []*bjob) error {
	var first error
	for _, j := range jobs {
		n := j.n
		n.mu.Lock()
		j.b.flushing = false
		n.flushing--
		cur := n.cache[j.idx] == j.b
		if j.newID != 0 {
			// the id belongs to the file only if this block is still the
			// file's block (not dropped by a truncate and written anew)
			if cur && !n.reaped && int(j.idx) < len(n.blocks) && n.blocks[j.idx] == 0 {
				n.blocks[j.idx] = uint32(j.newID)
				fs.markMeta(n)
			} else {
				fs.dirtyMu.Lock()
				fs.delData = append(fs.delData, j.newID)
				fs.dirtyMu.Unlock()
			}
		}
		if j.err != nil {
			// a block removed meanwhile may fail to update: that is fine
			if cur && !n.reaped && first == nil {
				first = j.err
			}
		} else if j.gen == j.b.gen && j.b.dirty {
			j.b.dirty = false
			atomic.AddInt64(&fs.dirtyBytes, -blockSize)
			if cur {
				fs.touch(n, j.idx, j.b)
			}
		}
		if n.flushing == 0 && n.flushDone != nil {
			n.flushDone.Broadcast()
		}
		n.mu.Unlock()
	}
	return first
}

// writeBehind writes full blocks in the background.
func (fs *FS) writeBehind() {
	for job := range fs.wb {
		atomic.AddInt64(&fs.wbBusy, 1)
		jobs := fs.collectJobs(job.n, []uint32{job.idx}, nil)
	more:
		for len(jobs) < 32 {
			select {
			case j, ok := <-fs.wb:
				if !ok {
					break more
				}
				jobs = fs.collectJobs(j.n, []uint32{j.idx}, jobs)
			default:
				break more
			}
		}
		fs.add(&fs.stats.linearFlush, uint64(len(jobs)))
		if err := fs.runJobs(jobs); err != nil {
			fs.log.Warnf("write-behind: %v", err)
		}
		atomic.AddInt64(&fs.wbBusy, -1)
		fs.evict()
	}
}

type wbJob struct {
	n   *node
	idx uint32
}

// flushData writes every dirty block and waits for write-behind in flight.
// Blocks that write-behind failed to write are retried here, so that an
// error (ENOSPC, EIO) reaches fsync instead of a silent success.
func (fs *FS) flushData() error {
	for round := 0; ; round++ {
		remaining, err := fs.flushDataRound()
		if err != nil || remaining == 0 || round == 2 {
			return err
		}
	}
}

// flushDataRound is one pass over the dirty files; it returns how many of
// them still have dirty blocks afterwards.
func (fs *FS) flushDataRound() (int, error) {
	fs.dirtyMu.Lock()
	nodes := make([]*node, 0, len(fs.dirtyData))
	for n := range fs.dirtyData {
		nodes = append(nodes, n)
	}
	clear(fs.dirtyData)
	fs.dirtyMu.Unlock()
	var jobs []*bjob
	for _, n := range nodes {
		jobs = fs.collectJobs(n, nil, jobs)
	}
	fs.add(&fs.stats.randomFlush, uint64(len(jobs)))
	err := fs.runJobs(jobs)
	remaining := 0
	for _, n := range nodes {
		n.mu.Lock()
		for n.flushing > 0 {
			if n.flushDone == nil {
				n.flushDone = sync.NewCond(&n.mu)
			}
			n.flushDone.Wait()
		}
		dirty := false
		for _, b := range n.cache {
			if b.dirty {
				dirty = true
				break
			}
		}
		n.mu.Unlock()
		if dirty {
			remaining++
			fs.dirtyMu.Lock()
			fs.dirtyData[n] = struct{}{}
			fs.dirtyMu.Unlock()
		}
	}
	return remaining, err
}

// throttle makes writers wait while too much dirty data is buffered: for
// write-behind to drain it, or, when write-behind has nothing to do (partial
// blocks), by writing the dirty blocks back itself.
func (fs *FS) throttle() error {
	limit := fs.budget / 2
	for atomic.LoadInt64(&fs.dirtyBytes) > limit {
		if len(fs.wb) > 0 || atomic.LoadInt64(&fs.wbBusy) > 0 {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		fs.dataMu.Lock()
		var err error
		if atomic.LoadInt64(&fs.dirtyBytes) > limit {
			err = fs.flushData()
		}
		fs.dataMu.Unlock()
		return err
	}
	return nil
}

// flush writes everything dirty to zdb in the order described above.
func (fs *FS) flush() error {
	fs.flushMu.Lock()
	defer fs.flushMu.Unlock()

	fs.dirtyMu.Lock()
	delMeta, delData := fs.delMeta, fs.delData
	fs.delMeta, fs.delData = nil, nil
	fs.dirtyMu.Unlock()
	requeue := func() {
		fs.dirtyMu.Lock()
		fs.delMeta = append(delMeta, fs.delMeta...)
		fs.delData = append(delData, fs.delData...)
		fs.dirtyMu.Unlock()
	}

	fs.dataMu.Lock()
	err := fs.flushData()
	fs.dataMu.Unlock()
	if err != nil {
		requeue()
		return err
	}

	fs.dirtyMu.Lock()
	dirs := make([]*node, 0, len(fs.dirtyDirs))
	for n := range fs.dirtyDirs {
		dirs = append(dirs, n)
	}
	metas := make([]*node, 0, len(fs.dirtyMeta))
	for n := range fs.dirtyMeta {
		if _, isDir := fs.dirtyDirs[n]; !isDir {
			metas = append(metas, n)
		}
	}
	clear(fs.dirtyMeta)
	clear(fs.dirtyDirs)
	fs.dirtyMu.Unlock()

	if err := fs.writeInodes(metas); err != nil {
		fs.requeueDirs(dirs)
		requeue()
		return err
	}
	if err := fs.writeDirs(dirs); err != nil {
		requeue()
		return err
	}
	if err := fs.b.meta.delMany(delMeta); err != nil {
		fs.dirtyMu.Lock()
		fs.delData = append(delData, fs.delData...)
		fs.dirtyMu.Unlock()
		return err
	}
	return fs.b.data.delMany(delData)
}

func (fs *FS) requeueDirs(dirs []*node) {
	fs.dirtyMu.Lock()
	for _, n := range dirs {
		fs.dirtyDirs[n] = struct{}{}
		fs.dirtyMeta[n] = struct{}{}
	}
	fs.dirtyMu.Unlock()
}

func (fs *FS) writeInodes(nodes []*node) error {
	var ids []uint64
	var vals [][]byte
	var done []*node
	for _, n := range nodes {
		n.mu.Lock()
		if !n.reaped {
			ids = append(ids, n.ino)
			vals = append(vals, n.encode())
			done = append(done, n)
		}
		n.mu.Unlock()
	}
	if err := fs.b.meta.setMany(ids, vals); err != nil {
		fs.dirtyMu.Lock()
		for _, n := range done {
			fs.dirtyMeta[n] = struct{}{}
		}
		fs.dirtyMu.Unlock()
		return err
	}
	for _, n := range done {
		n.fresh.Store(false)
	}
	return nil
}

// storedEntries returns the entries of bucket b of directory n that may be
// written now: names of inodes whose record is not in zdb yet (created
// after this write-back cycle began) wait for the next cycle. complete is
// false when some were held back. n.mu is held.
func (fs *FS) storedEntries(n *node, b int) (entries []layout.DirEntry, complete bool) {
	all := n.dir.entries(b)
	entries = all[:0]
	complete = true
	fs.nodesMu.Lock()
	for _, e := range all {
		if c := fs.nodes[e.Ino]; c != nil && e.Name != "." && e.Name != ".." && c.fresh.Load() {
			complete = false
			continue
		}
		entries = append(entries, e)
	}
	fs.nodesMu.Unlock()
	return entries, complete
}

func (fs *FS) writeDirs(dirs []*node) error {
	if len(dirs) == 0 {
		return nil
	}
	// new buckets get an id first ("L" placeholder, as 0-db-fs does)
	type slotRef struct {
		n *node
		b int
	}
	var need []slotRef
	for _, n := range dirs {
		n.mu.Lock()
		if !n.reaped {
			for b := range n.dir.buckets {
				if n.dir.dirty[b] && n.dir.slots[b] == 0 && len(n.dir.buckets[b]) > 0 {
					need = append(need, slotRef{n, b})
				}
			}
		}
		n.mu.Unlock()
	}
	if len(need) > 0 {
		ph := make([][]byte, len(need))
		for i := range ph {
			ph[i] = []byte("L")
		}
		ids, err := fs.b.meta.insertMany(ph)
		if err != nil {
			fs.requeueDirs(dirs)
			return err
		}
		for i, s := range need {
			s.n.mu.Lock()
			s.n.dir.slots[s.b] = ids[i]
			s.n.mu.Unlock()
		}
	}
	// the directory inodes now name their buckets (still placeholders for
	// new ones, which read back as empty): write them before the contents
	if err := fs.writeInodes(dirs); err != nil {
		fs.requeueDirs(dirs)
		return err
	}
	var ids []uint64
	var vals [][]byte
	var later []*node
	for _, n := range dirs {
		n.mu.Lock()
		if !n.reaped {
			for b := range n.dir.buckets {
				if !n.dir.dirty[b] {
					continue
				}
				if n.dir.slots[b] == 0 {
					// no id yet: empty, or filled after the ids were
					// handed out above (then the next cycle writes it)
					if len(n.dir.buckets[b]) == 0 {
						n.dir.dirty[b] = false
					} else {
						later = append(later, n)
					}
					continue
				}
				entries, complete := fs.storedEntries(n, b)
				n.dir.dirty[b] = !complete
				if !complete {
					later = append(later, n)
				}
				ids = append(ids, n.dir.slots[b])
				vals = append(vals, layout.EncodeDirlist(n.dir.slots[b], entries))
			}
		}
		n.mu.Unlock()
	}
	if err := fs.b.meta.setMany(ids, vals); err != nil {
		for _, n := range dirs {
			n.mu.Lock()
			for b := range n.dir.dirty {
				n.dir.dirty[b] = true
			}
			n.mu.Unlock()
		}
		fs.requeueDirs(dirs)
		return err
	}
	fs.requeueDirs(later)
	return nil
}

package zdbfs

import (
	"syscall"
)

// Direct writes: a WRITE request that covers whole, aligned 128 KiB blocks
// (the kernel's writeback sends 1 MiB page-aligned requests) sends those
// blocks to zdb straight from the FUSE request buffer, pipelined on one
// connection (at most directBatches requests at once), instead of copying
// them into the block cache for write-behind.
// The request is answered once zdb has stored them, so the buffer (which
// go-fuse reuses after Write returns) is never referenced later.
//
// While a block is on its way, n.cache holds a placeholder for it (a block
// with no data and a non-nil sending channel) and n.flushing counts it, so
//   - readers, writers and truncate wait for it (readBlocks, writeAt),
//   - a truncate or unlink drops the placeholder: the id zdb hands back is
//     then queued for deletion, as runJobs does for dropped blocks,
//   - a write-back cycle waits for it before it deletes anything (the node
//     is in dirtyData), so an in-place SET never lands after the DEL of a
//     truncated id,
//   - the inode names a new id only once zdb has stored the block (the id
//     is set under n.mu after the reply; markMeta queues the inode).
// A block zdb failed to store is copied into the cache as a dirty block
// instead: write-back retries it and fsync reports the error, as for
// write-behind.

// directSend is one block sent straight from a FUSE request.
// Its data is the block's bytes in the request buffer, its id the block's
// data id when it was started (0 = new).
type directSend struct {
	blockSet
	ph *block // placeholder in n.cache
}

// directOK reports whether block idx may be sent directly: nothing cached,
// or a clean copy no one is sending. n.mu held.
func directOK(n *node, idx uint32) bool {
	b := n.cache[idx]
	return b == nil || (!b.dirty && !b.flushing && b.sending == nil)
}

// writeBlocks stores data at off: whole aligned blocks that may go directly get placeholders and
// are returned for sendDirect, the rest is copied into the cache (writeAt),
// whose full blocks are returned for write-behind. n.mu held; it may be
// released while writeAt waits.
func (fs *FS) writeBlocks(n *node, data []byte, off uint64) (sends []*directSend, full []uint32, e syscall.Errno) {
	end := off + uint64(len(data))
	if end/blockSize >= maxBlocks {
		return nil, nil, syscall.EFBIG
	}
	// the whole blocks of the request: [firstFull, endFull)
	firstFull := (off + blockSize - 1) / blockSize
	endFull := end / blockSize
	if firstFull >= endFull {
		full, e = fs.writeAt(n, data, off)
		return nil, full, e
	}
	// the partial head block
	if head := firstFull * blockSize; head > off {
		if full, e = fs.writeAt(n, data[:head-off], off); e != 0 {
			return nil, full, e
		}
	}
	for idx := firstFull; idx < endFull; idx++ {
		p := idx * blockSize
		chunk := data[p-off : p-off+blockSize]
		if !directOK(n, uint32(idx)) {
			f, e := fs.writeAt(n, chunk, p)
			full = append(full, f...)
			if e != 0 {
				return sends, full, e
			}
			continue
		}
		if old := n.cache[uint32(idx)]; old != nil {
			// a clean cached copy is stale now
			fs.untrack(old)
			fs.account(-int64(cap(old.data)))
			putBuf(old.data)
			old.data = nil
		}
		// a read of the block in flight would bring back the old bytes
		// (an in-place SET keeps the id fetched() checks): forget it
		delete(n.inflight, uint32(idx))
		ph := &block{sending: make(chan struct{})}
		n.cache[uint32(idx)] = ph
		n.flushing++
		sends = append(sends, &directSend{blockSet: blockSet{ino: n.ino, idx: uint32(idx), data: chunk, id: n.blockID(uint32(idx))}, ph: ph})
	}
	// the partial tail block
	if tail := endFull * blockSize; tail < end {
		f, e := fs.writeAt(n, data[tail-off:], tail)
		full = append(full, f...)
		if e != 0 {
			return sends, full, e
		}
	}
	if len(sends) > 0 {
		fs.grow(n, endFull*blockSize)
		fs.dirtyMu.Lock()
		fs.dirtyData[n] = struct{}{}
		fs.dirtyMu.Unlock()
	}
	return sends, full, 0
}

// sendDirect stores the blocks of sends in zdb in one pipeline and applies
// the results; n.mu not held. Blocks zdb failed to store become dirty
// cache blocks, so sendDirect itself never fails.
//
// jobs are cached blocks of the same WRITE that became full (collected,
// i.e. flushing): they go in the same pipeline instead of to write-behind.
// The kernel's writeback sends 1 MiB WRITEs at any 4 KiB boundary, so
// most of them carry seven whole blocks and complete the cached block that
// the previous WRITE began; sent with the seven, it costs zdb no write of
// its own and zdbfs no hand-off to a write-behind worker.
func (fs *FS) sendDirect(n *node, sends []*directSend, jobs []*bjob) {
	fs.b.data.direct <- struct{}{}
	sets := make([]*blockSet, 0, len(jobs)+len(sends))
	for _, j := range jobs {
		sets = append(sets, &j.blockSet)
	}
	for _, d := range sends {
		sets = append(sets, &d.blockSet)
	}
	fs.b.data.setBlocks(sets)
	<-fs.b.data.direct
	fs.add(&fs.stats.linearFlush, uint64(len(sets)))
	if err := fs.applyJobs(jobs); err != nil {
		fs.log.WithField("ino", n.ino).Warnf("write-behind: %v", err)
	}
	n.mu.Lock()
	var failed error
	named := false // the inode names a new block: write it back
	for _, s := range sends {
		n.flushing--
		cur := n.cache[s.idx] == s.ph
		if cur {
			delete(n.cache, s.idx)
		}
		if s.newID != 0 {
			// the id belongs to the file only if this block is still the
			// file's block (not dropped by a truncate or an unlink)
			if cur && !n.reaped && int(s.idx) < len(n.blocks) && n.blocks[s.idx] == 0 {
				n.blocks[s.idx] = uint32(s.newID)
				named = true
			} else {
				fs.dirtyMu.Lock()
				fs.delData = append(fs.delData, s.newID)
				fs.dirtyMu.Unlock()
			}
		}
		if s.err != nil && cur && !n.reaped {
			// keep the bytes as a dirty block: write-back retries it and
			// reports the error to fsync
			b := &block{data: append(getBuf(), s.data...)}
			n.cache[s.idx] = b
			fs.account(int64(cap(b.data)))
			fs.markDirty(n, b)
			if failed == nil {
				failed = s.err
			}
		}
		close(s.ph.sending)
	}
	if named {
		fs.markMeta(n)
	}
	if n.flushing == 0 && n.flushDone != nil {
		n.flushDone.Broadcast()
	}
	n.mu.Unlock()
	if failed != nil {
		fs.log.WithField("ino", n.ino).Warnf("direct write: %v (kept in the cache for write-back)", failed)
	}
}

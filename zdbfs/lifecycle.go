package zdbfs

import (
	"fmt"
	"time"
)

// background writes dirty state back every two seconds.
func (fs *FS) background(stop <-chan struct{}) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := fs.flush(); err != nil {
				fs.log.Warnf("write-back: %v", err)
			}
			fs.sweep()
		}
	}
}

// sweep forgets clean inodes the kernel no longer references: those it
// forgot while they were dirty (fs.unforgotten), and with 100,000 inodes in
// memory all of them. It holds flushMu so that no inode is in the middle of
// being written back.
func (fs *FS) sweep() {
	fs.flushMu.Lock()
	defer fs.flushMu.Unlock()
	fs.nodesMu.Lock()
	retry := make([]*node, 0, len(fs.unforgotten))
	for n := range fs.unforgotten {
		if n.lookups == 0 {
			retry = append(retry, n)
		}
	}
	clear(fs.unforgotten) // dropIfClean keeps those still dirty
	fs.nodesMu.Unlock()
	for _, n := range retry {
		fs.dropIfClean(n)
	}
	fs.nodesMu.Lock()
	if len(fs.nodes) < 100000 {
		fs.nodesMu.Unlock()
		return
	}
	cand := make([]*node, 0, len(fs.nodes))
	for _, n := range fs.nodes {
		if n.lookups == 0 {
			cand = append(cand, n)
		}
	}
	fs.nodesMu.Unlock()
	for _, n := range cand {
		n.mu.Lock()
		busy := n.opens > 0 || n.flushing > 0 || len(n.cache) > 0 || len(n.inflight) > 0
		n.mu.Unlock()
		fs.dirtyMu.Lock()
		_, d1 := fs.dirtyMeta[n]
		_, d2 := fs.dirtyDirs[n]
		_, d3 := fs.dirtyData[n]
		fs.dirtyMu.Unlock()
		if busy || d1 || d2 || d3 {
			continue
		}
		fs.nodesMu.Lock()
		if n.lookups == 0 && fs.nodes[n.ino] == n {
			delete(fs.nodes, n.ino)
		}
		fs.nodesMu.Unlock()
	}
}

// shutdown reaps unlinked inodes, writes everything back and releases the
// unused reserved ids.
func (fs *FS) shutdown() error {
	fs.nodesMu.Lock()
	var orphans []*node
	for _, n := range fs.nodes {
		n.lookups = 0
		orphans = append(orphans, n)
	}
	fs.nodesMu.Unlock()
	for _, n := range orphans {
		n.mu.Lock()
		n.opens = 0
		n.mu.Unlock()
		fs.maybeReap(n)
	}
	var err error
	for i := 0; i < 3; i++ {
		if err = fs.flush(); err == nil {
			break
		}
		fs.log.Warnf("final write-back: %v", err)
		time.Sleep(time.Second)
	}
	if err != nil {
		return fmt.Errorf("final write-back: %w", err)
	}
	fs.idMu.Lock()
	free := fs.freeIDs
	fs.freeIDs = nil
	fs.idMu.Unlock()
	if err := fs.b.meta.delMany(free); err != nil {
		fs.log.Warnf("release reserved ids: %v", err)
	}
	fs.b.meta.close()
	fs.b.data.close()
	fs.b.temp.close()
	fs.log.Info("unmounted, everything written to zdb")
	return nil
}

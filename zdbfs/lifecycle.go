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
	cand := make([]*node, 0, len(fs.unforgotten))
	for n := range fs.unforgotten {
		cand = append(cand, n)
	}
	clear(fs.unforgotten) // dropIfClean keeps those still dirty
	if len(fs.nodes) >= 100000 {
		for _, n := range fs.nodes {
			cand = append(cand, n)
		}
	}
	fs.nodesMu.Unlock()
	for _, n := range cand {
		fs.nodesMu.Lock()
		forgotten := n.lookups == 0
		fs.nodesMu.Unlock()
		if forgotten {
			fs.dropIfClean(n)
		}
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

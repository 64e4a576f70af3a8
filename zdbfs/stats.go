package zdbfs

import (
	"encoding/binary"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdb/client"
)

// ioctls of 0-db-fs, read by zstor every second from the mountpoint.
const (
	ioctlSnapshot   = 0x80084500 // _IOR('E', 0, uint64_t): write back, return a timestamp
	ioctlStatistics = 0x80F04501 // _IOR('E', 1, stats_t): 30 size_t counters
	statsVersion    = 2
)

// stats are the counters 0-db-fs exposes through its statistics ioctl.
type stats struct {
	fuseReqs     uint64
	cacheHit     uint64
	cacheMiss    uint64
	linearFlush  uint64
	randomFlush  uint64
	getattr      uint64
	setattr      uint64
	create       uint64
	readdir      uint64
	open         uint64
	read         uint64
	write        uint64
	mkdir        uint64
	unlink       uint64
	rmdir        uint64
	rename       uint64
	link         uint64
	symlink      uint64
	statfs       uint64
	ioctl        uint64
	readBytes    uint64
	writeBytes   uint64
	errorReplies uint64
}

func (fs *FS) count(c *uint64) {
	atomic.AddUint64(c, 1)
	atomic.AddUint64(&fs.stats.fuseReqs, 1)
}

func (fs *FS) add(c *uint64, n uint64) { atomic.AddUint64(c, n) }

func parseInfo(b []byte) map[string]string { return client.ParseInfo(b) }

// encodeStats lays the counters out as 0-db-fs's stats_t (version 2).
func (fs *FS) encodeStats(b []byte) {
	fs.nodesMu.Lock()
	entries := uint64(len(fs.nodes))
	fs.nodesMu.Unlock()
	cached := uint64(atomic.LoadInt64(&fs.cacheBytes))
	ld := func(p *uint64) uint64 { return atomic.LoadUint64(p) }
	s := &fs.stats
	vals := []uint64{
		statsVersion, ld(&s.fuseReqs),
		ld(&s.cacheHit), ld(&s.cacheMiss), 0, ld(&s.linearFlush), ld(&s.randomFlush),
		1, 1, entries, cached / blockSize, cached,
		ld(&s.getattr), ld(&s.setattr), ld(&s.create), ld(&s.readdir), ld(&s.open), ld(&s.read),
		ld(&s.write), ld(&s.mkdir), ld(&s.unlink), ld(&s.rmdir), ld(&s.rename), ld(&s.link),
		ld(&s.symlink), ld(&s.statfs), ld(&s.ioctl),
		ld(&s.readBytes), ld(&s.writeBytes), ld(&s.errorReplies),
	}
	for i, v := range vals {
		if 8*i+8 <= len(b) {
			binary.LittleEndian.PutUint64(b[8*i:], v)
		}
	}
}

// Ioctl serves the statistics and snapshot ioctls of 0-db-fs.
func (fs *FS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	fs.count(&fs.stats.ioctl)
	switch in.Cmd {
	case ioctlStatistics:
		if len(outbuf) < 240 {
			return fuse.EINVAL
		}
		fs.encodeStats(outbuf)
		return fuse.OK
	case ioctlSnapshot:
		if len(outbuf) < 8 {
			return fuse.EINVAL
		}
		if err := fs.flush(); err != nil {
			return fuse.Status(errno(err))
		}
		binary.LittleEndian.PutUint64(outbuf, uint64(time.Now().Unix()))
		return fuse.OK
	}
	return fuse.Status(syscall.ENOTTY)
}

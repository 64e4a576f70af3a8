package zdbfs

import (
	"sync/atomic"

	"github.com/qsfs/qsfs/zdb/client"
)

// stats are the counters 0-db-fs exposes through its statistics ioctl.
type stats struct {
	fuseReqs   uint64
	getattr    uint64
	setattr    uint64
	create     uint64
	readdir    uint64
	open       uint64
	read       uint64
	write      uint64
	mkdir      uint64
	unlink     uint64
	rmdir      uint64
	rename     uint64
	link       uint64
	symlink    uint64
	statfs     uint64
	readBytes  uint64
	writeBytes uint64
}

func (fs *FS) count(c *uint64) {
	atomic.AddUint64(c, 1)
	atomic.AddUint64(&fs.stats.fuseReqs, 1)
}

func (fs *FS) add(c *uint64, n uint64) { atomic.AddUint64(c, n) }

func parseInfo(b []byte) map[string]string { return client.ParseInfo(b) }

package zdbfs

import (
	"fmt"
	"os"
	"strconv"

	"github.com/qsfs/qsfs/internal/mountinfo"
	"github.com/sirupsen/logrus"
)

// Kernel settings of the mount's backing device (/sys/class/bdi/<maj:min>),
// set once the mount is live. They need root; without it zdbfs keeps the
// kernel's defaults and says so in the debug log.
//
//   - read_ahead_kb: FUSE starts at 128 KiB, so sequential reads arrive as
//     128 KiB requests with little overlap; 4 MiB keeps several 1 MiB READs
//     in flight (the kernel caps the mount's readahead to this).
//   - max_bytes (dirtylimit=): the kernel lets a FUSE mount hold only 1% of
//     the dirty page limit (strict_limit), tens of MiB. Random small writes
//     then reach zdbfs page by page, each a read-modify-write of a 128 KiB
//     block. A larger limit lets the kernel merge neighbouring pages into
//     one WRITE and zdbfs find the block still cached (fio randwrite 4k
//     about 2x faster at 128 MiB), and strict_limit stays on so the mount's
//     dirty pages remain bounded by it. It is not the default: dd
//     conv=fsync was slower in most A/B rounds with 64 or 128 MiB.

const (
	defaultReadahead  = 4 << 20
	defaultDirtyLimit = 0 // the kernel's
	maxReadahead      = 1 << 30
	maxDirtyLimit     = 1 << 40
)

// bdiDir returns the sysfs directory of the backing device of the zdbfs
// mount at mnt, from /proc/self/mountinfo. It must not stat mnt: a FUSE
// server that makes a request to its own mount can never exit if it is
// killed while that request is in flight (the kernel then waits for the
// answer uninterruptibly, and the connection ends only when the dying
// process's /dev/fuse descriptor is closed).
func bdiDir(mnt string) (string, error) {
	e, ok, err := mountinfo.At(mountinfo.Self, mnt)
	if err != nil {
		return "", err
	}
	if !ok || e.FSType != "fuse.zdbfs" {
		return "", fmt.Errorf("no zdbfs mount at %q in %s", mnt, mountinfo.Self)
	}
	return "/sys/class/bdi/" + e.Dev, nil
}

// tuneBDI applies readahead= and dirtylimit= to the mount's backing device.
// A value of 0 keeps the kernel's setting.
func tuneBDI(o *Options, log *logrus.Entry) {
	dir, err := bdiDir(o.Mountpoint)
	if err != nil {
		log.Debugf("bdi: %v", err)
		return
	}
	set := func(name string, v uint64) {
		path := dir + "/" + name
		if err := os.WriteFile(path, []byte(strconv.FormatUint(v, 10)), 0o644); err != nil {
			log.WithField("setting", path).Debugf("bdi: %v", err)
		}
	}
	if o.Readahead > 0 {
		set("read_ahead_kb", o.Readahead>>10)
	}
	if o.DirtyLimit > 0 {
		set("strict_limit", 1)
		set("max_bytes", o.DirtyLimit)
	}
}

package zdbfs

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

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
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	dev := ""
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options... - type source super
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 5 || sep+1 >= len(f) || unescapeMountinfo(f[4]) != mnt || f[sep+1] != "fuse.zdbfs" {
			continue
		}
		dev = f[2] // the last one is the mount on top
	}
	if dev == "" {
		return "", fmt.Errorf("no zdbfs mount at %q in /proc/self/mountinfo", mnt)
	}
	return "/sys/class/bdi/" + dev, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for a space, ...) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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

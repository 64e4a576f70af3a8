package zstor

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// 0-db-fs statistics ioctl (ZDBFS_IOCTL_STATISTICS = _IOR('E', 1, stats_t)):
// 30 native size_t counters, version 2.
const (
	zdbfsIoctlStatistics = 0x80F04501
	zdbfsStatsSize       = 240
)

// zdbfsFields maps stats_t slots to the official metric names; syscalls are
// slots 12..26 exported as fs_syscalls{syscall=...}.
var zdbfsFields = []struct {
	slot  int
	name  string
	gauge bool
}{
	{1, "fs_fuse_reqs", false}, {2, "fs_cache_hits", false}, {3, "fs_cache_miss", false},
	{4, "fs_cache_full", false}, {5, "fs_cache_linear_flush", false}, {6, "fs_cache_random_flush", false},
	{7, "fs_cache_branches", true}, {8, "fs_cache_branches_allocated", true}, {9, "fs_cache_entries", true},
	{10, "fs_cache_blocks", true}, {11, "fs_cache_blocksize", true},
	{27, "fs_bytes_read", false}, {28, "fs_bytes_written", false}, {29, "fs_fuse_errors", false},
}

var zdbfsSyscalls = []string{"getattr", "setattr", "create", "readdir", "open", "read", "write", "mkdir",
	"unlink", "rmdir", "rename", "link", "symlink", "statsfs", "ioctl"}

// readZdbfsStats runs the statistics ioctl on a zdbfs mountpoint.
func readZdbfsStats(mountpoint string) ([30]uint64, error) {
	var out [30]uint64
	f, err := os.Open(mountpoint)
	if err != nil {
		return out, err
	}
	defer f.Close()
	var buf [zdbfsStatsSize]byte
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), zdbfsIoctlStatistics, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return out, fmt.Errorf("zdbfs statistics ioctl on %s: %w", mountpoint, errno)
	}
	for i := range out {
		out[i] = binary.NativeEndian.Uint64(buf[8*i:])
	}
	return out, nil
}

// zdbfsStats polls the mountpoint every second and exports the fs_*
// metrics.
type zdbfsStats struct {
	mu    sync.Mutex
	vals  [30]uint64
	ok    bool
	descs map[string]*prometheus.Desc
}

var _ prometheus.Collector = (*zdbfsStats)(nil)

func newZdbfsStats() *zdbfsStats {
	z := &zdbfsStats{descs: map[string]*prometheus.Desc{}}
	for _, f := range zdbfsFields {
		z.descs[f.name] = prometheus.NewDesc(f.name, "0-db-fs statistics counter "+f.name, nil, nil)
	}
	z.descs["fs_syscalls"] = prometheus.NewDesc("fs_syscalls", "0-db-fs syscalls by type", []string{"syscall"}, nil)
	return z
}

func (z *zdbfsStats) poll(mountpoint string, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		v, err := readZdbfsStats(mountpoint)
		z.mu.Lock()
		z.vals, z.ok = v, err == nil && v[0] >= 2
		z.mu.Unlock()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (z *zdbfsStats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range z.descs {
		ch <- d
	}
}

func (z *zdbfsStats) Collect(ch chan<- prometheus.Metric) {
	z.mu.Lock()
	v, ok := z.vals, z.ok
	z.mu.Unlock()
	if !ok {
		return
	}
	for _, f := range zdbfsFields {
		t := prometheus.CounterValue
		if f.gauge {
			t = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(z.descs[f.name], t, float64(v[f.slot]))
	}
	for i, name := range zdbfsSyscalls {
		ch <- prometheus.MustNewConstMetric(z.descs["fs_syscalls"], prometheus.CounterValue, float64(v[12+i]), name)
	}
}

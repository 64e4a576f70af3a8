package zdbfs

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// waitMounted waits for zdbfs to log that it is mounted, which it does
// after applying the bdi settings.
func waitMounted(t *testing.T, s *stack) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.fs.output(), "msg=mounted"); {
		if time.Now().After(deadline) {
			t.Fatalf("zdbfs did not log that it is mounted:\n%s", s.fs.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readBDI returns the integer in the mount's bdi setting name.
func readBDI(t *testing.T, mnt, name string) uint64 {
	t.Helper()
	dir, err := bdiDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dir + "/" + name)
	if err != nil {
		t.Skipf("kernel has no bdi setting %s: %v", name, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s/%s = %q: %v", dir, name, b, err)
	}
	return v
}

// near reports whether v is within 2% of x: the kernel stores max_bytes as
// a fraction of the global dirty limit and reports it back rounded.
func near(x uint64) func(uint64) bool {
	return func(v uint64) bool { return v > x-x/50 && v < x+x/50 }
}

func TestTuneDefaults(t *testing.T) {
	s := newStack(t)
	s.mount()
	waitMounted(t, s)
	if v := readBDI(t, s.mnt, "read_ahead_kb"); v != defaultReadahead>>10 {
		t.Errorf("read_ahead_kb = %d, want %d", v, defaultReadahead>>10)
	}
	// the dirty limit stays the kernel's, which bounds the mount on its own
	if v := readBDI(t, s.mnt, "strict_limit"); v != 1 {
		t.Errorf("strict_limit = %d, want 1", v)
	}
}

func TestTuneOptions(t *testing.T) {
	s := newStack(t)
	s.mount("readahead=2M", "dirtylimit=64M", "procs=3")
	waitMounted(t, s)
	if v := readBDI(t, s.mnt, "read_ahead_kb"); v != 2048 {
		t.Errorf("read_ahead_kb = %d, want 2048", v)
	}
	if v := readBDI(t, s.mnt, "max_bytes"); !near(64 << 20)(v) {
		t.Errorf("max_bytes = %d, want about %d", v, 64<<20)
	}
	if v := readBDI(t, s.mnt, "strict_limit"); v != 1 {
		t.Errorf("strict_limit = %d, want 1", v)
	}
	if !strings.Contains(s.fs.output(), "procs=3") {
		t.Errorf("zdbfs did not log procs=3:\n%s", s.fs.output())
	}
	// the mount works with these settings
	f := s.mnt + "/f"
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(f); err != nil || string(b) != "data" {
		t.Fatalf("read back %q, %v", b, err)
	}
}

func TestTuneKernelDefaults(t *testing.T) {
	s := newStack(t)
	s.mount("readahead=0", "dirtylimit=0")
	waitMounted(t, s)
	// zdbfs leaves the kernel's values: FUSE's read-ahead is 128 KiB at most
	if v := readBDI(t, s.mnt, "read_ahead_kb"); v > 128 {
		t.Errorf("read_ahead_kb = %d with readahead=0, want the kernel's (<= 128)", v)
	}
}

// TestPosixNoWriteback runs go-fuse's POSIX suite with -o nowriteback (no
// kernel writeback cache; zdbfs keeps its own write-back).
func TestPosixNoWriteback(t *testing.T) { runPosix(t, "nowriteback") }

// TestNoWritebackTimes checks that without the kernel's writeback cache
// zdbfs stamps mtime itself and that the data and size survive a remount.
func TestNoWritebackTimes(t *testing.T) {
	s := newStack(t)
	s.mount("nowriteback")
	f := s.mnt + "/f"
	if err := os.WriteFile(f, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1000, 0)
	if err := os.Chtimes(f, old, old); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(" two")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().After(old) || fi.Size() != 7 {
		t.Errorf("after append: mtime %v size %d, want a new mtime and size 7", fi.ModTime(), fi.Size())
	}
	s.unmount()
	s.mount()
	if b, err := os.ReadFile(f); err != nil || string(b) != "one two" {
		t.Fatalf("after remount: %q, %v", b, err)
	}
}

// requestCounts reads the SETATTR and WRITE counters of the statistics ioctl.
func requestCounts(t *testing.T, mnt string) (setattr, write uint64) {
	t.Helper()
	f, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 240)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), ioctlStatistics, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		t.Fatalf("statistics ioctl: %v", e)
	}
	return binary.LittleEndian.Uint64(buf[13*8:]), binary.LittleEndian.Uint64(buf[18*8:])
}

// TestSmallFileRequests checks the requests a shell's `printf ... >file`
// costs: with the writeback cache the kernel writes the page back at close
// (one WRITE per file), and the times too (one SETATTR per file) unless
// zdbfs mounted itself (as root) and announced one-second timestamps: then
// only a file written in a later second than it was created costs one.
// With nowriteback the write(2) itself is the WRITE and close sends no
// SETATTR.
func TestSmallFileRequests(t *testing.T) {
	const files = 20
	var writeback uint64 = files
	if os.Geteuid() == 0 {
		writeback = 0
	}
	for _, c := range []struct {
		opt         string
		wantSetattr uint64
	}{{"", writeback}, {"nowriteback", 0}} {
		t.Run("opts="+c.opt, func(t *testing.T) {
			s := newStack(t)
			if c.opt != "" {
				s.mount(c.opt)
			} else {
				s.mount()
			}
			set0, write0 := requestCounts(t, s.mnt)
			for i := 0; i < files; i++ {
				if err := os.WriteFile(fmt.Sprintf("%s/f%d", s.mnt, i), make([]byte, 4096), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			set1, write1 := requestCounts(t, s.mnt)
			slack := uint64(0)
			if c.wantSetattr == 0 && c.opt == "" {
				slack = files / 4 // files that straddled a second
			}
			if set1-set0 < c.wantSetattr || set1-set0 > c.wantSetattr+slack || write1-write0 != files {
				t.Errorf("%d files: %d SETATTR and %d WRITE requests, want %d and %d",
					files, set1-set0, write1-write0, c.wantSetattr, files)
			}
		})
	}
}

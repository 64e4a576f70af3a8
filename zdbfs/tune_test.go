package zdbfs

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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
	if v := readBDI(t, s.mnt, "max_bytes"); !near(defaultDirtyLimit)(v) {
		t.Errorf("max_bytes = %d, want about %d", v, defaultDirtyLimit)
	}
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

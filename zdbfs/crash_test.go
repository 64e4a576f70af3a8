package zdbfs

import (
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/qsfs/qsfs/internal/testbin"
	"path/filepath"
	"syscall"
	"testing"
)

func fsyncPath(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
}

// TestCrashSafety kills zdbfs and then zdb with SIGKILL and checks that what
// fsync returned for is there after a restart, in a consistent tree.
func TestCrashSafety(t *testing.T) { runCrashSafety(t) }

func runCrashSafety(t *testing.T, opts ...string) {
	s := newStack(t)
	s.mount(opts...)
	must(t, os.MkdirAll(filepath.Join(s.mnt, "dir/sub"), 0o755))
	sum := writeRandom(t, filepath.Join(s.mnt, "dir/data"), 20<<20+12345, 7)
	writeFile(t, filepath.Join(s.mnt, "dir/sub/small"), "durable")
	must(t, os.Rename(filepath.Join(s.mnt, "dir/sub/small"), filepath.Join(s.mnt, "dir/small")))
	fsyncPath(t, filepath.Join(s.mnt, "dir/data"))
	fsyncPath(t, filepath.Join(s.mnt, "dir"))
	// not synced: may or may not survive, but must not break the tree
	for i := 0; i < 50; i++ {
		writeFile(t, filepath.Join(s.mnt, "dir/sub", "unsynced"+string(rune('a'+i%26))+string(rune('a'+i/26))), "maybe")
	}

	s.crash()
	s.zdb.stop(syscall.SIGKILL)
	s.startZdb()
	s.mount(opts...)

	if got := fileSum(t, filepath.Join(s.mnt, "dir/data")); got != sum {
		t.Errorf("fsynced file has sha256 %s after the crash, want %s", got, sum)
	}
	if got := readFile(t, filepath.Join(s.mnt, "dir/small")); got != "durable" {
		t.Errorf("fsynced small file reads %q after the crash", got)
	}
	if _, err := os.Stat(filepath.Join(s.mnt, "dir/sub/small")); !os.IsNotExist(err) {
		t.Errorf("renamed file still at its old name: %v", err)
	}
	tree(t, s.mnt) // every entry must stat and read
	// and the filesystem keeps working
	writeFile(t, filepath.Join(s.mnt, "dir/after"), "after")
	s.unmount()
	s.mount(opts...)
	if got := readFile(t, filepath.Join(s.mnt, "dir/after")); got != "after" {
		t.Errorf("file written after the restart reads %q", got)
	}
}

// TestZdbRestart restarts zdb under a live mount: zdbfs reconnects.
func TestZdbRestart(t *testing.T) {
	s := newStack(t)
	s.mount()
	writeFile(t, filepath.Join(s.mnt, "before"), "before")
	fsyncPath(t, filepath.Join(s.mnt, "before"))
	s.zdb.stop(syscall.SIGTERM)
	s.startZdb()
	writeFile(t, filepath.Join(s.mnt, "after"), "after")
	fsyncPath(t, filepath.Join(s.mnt, "after"))
	s.unmount()
	s.mount()
	for _, name := range []string{"before", "after"} {
		if got := readFile(t, filepath.Join(s.mnt, name)); got != name {
			t.Errorf("%s reads %q", name, got)
		}
	}
}

// findZdbfs returns the pid of the zdbfs serving mnt (started in background).
func findZdbfs(t *testing.T, mnt string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 3 && args[1] == "zdbfs" && args[2] == "-o" && args[len(args)-1] == mnt {
			return pid
		}
	}
	t.Fatalf("no zdbfs process for %s", mnt)
	return 0
}

// TestBackgroundAutoUnmount checks -o background returns with the mount
// live and -o auto_unmount removes the mount when zdbfs is killed.
func TestBackgroundAutoUnmount(t *testing.T) {
	s := newStack(t)
	out, err := exec.Command(testbin.Path(t), "zdbfs", "-o", "autons,background,auto_unmount,unix="+s.sock, s.mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("background mount: %v\n%s", err, out)
	}
	if !mounted(s.mnt) {
		t.Fatal("background mode returned before the mount was live")
	}
	writeFile(t, filepath.Join(s.mnt, "f"), "x")
	pid := findZdbfs(t, s.mnt)
	must(t, syscall.Kill(pid, syscall.SIGKILL))
	expectGone(t, s.mnt, "mount still there after zdbfs was killed with auto_unmount")
}

// TestTruncateAfterRemount truncates files that were not opened since the
// mount, by path.
func TestTruncateAfterRemount(t *testing.T) {
	s := newStack(t)
	s.mount()
	writeFile(t, filepath.Join(s.mnt, "f"), strings.Repeat("y", 200000))
	s.unmount()
	s.mount()
	must(t, os.Truncate(filepath.Join(s.mnt, "f"), 150000))
	must(t, os.Truncate(filepath.Join(s.mnt, "f"), 160000))
	got := readFile(t, filepath.Join(s.mnt, "f"))
	if len(got) != 160000 || got[:150000] != strings.Repeat("y", 150000) || strings.Trim(got[150000:], "\x00") != "" {
		t.Fatalf("after truncates: %d bytes", len(got))
	}
}

// TestSeqModeZdb mounts over a zdb started with --mode seq, as the plugin
// runs it: autons finds sequential namespaces and sends no NSSET mode.
func TestSeqModeZdb(t *testing.T) {
	s := newStack(t, "--mode", "seq", "--datasize", "1M")
	s.mount()
	sum := writeRandom(t, filepath.Join(s.mnt, "f"), 5<<20, 3) // crosses data file rotations
	s.unmount()
	s.mount() // autons again on existing namespaces
	if got := fileSum(t, filepath.Join(s.mnt, "f")); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
}

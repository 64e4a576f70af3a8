package zdbfs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

const enableURingParam = "/sys/module/fuse/parameters/enable_uring"

// setURing sets the fuse module's enable_uring parameter for the test and
// puts the old value back afterwards. It skips without root or on a kernel
// without FUSE over io_uring. The parameter is global: mounts made by other
// tests meanwhile with the default uring=auto use io_uring too, which they
// must survive anyway.
func setURing(t *testing.T, on bool) {
	t.Helper()
	needFuse(t)
	if os.Geteuid() != 0 {
		t.Skip("FUSE over io_uring needs root (direct mount, module parameter)")
	}
	old, err := os.ReadFile(enableURingParam)
	if err != nil {
		t.Skipf("kernel without FUSE over io_uring: %v", err)
	}
	v := "N"
	if on {
		v = "Y"
	}
	if err := os.WriteFile(enableURingParam, []byte(v), 0o644); err != nil {
		t.Fatalf("set %s: %v", enableURingParam, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(enableURingParam, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", enableURingParam, err)
		}
	})
}

// uringServed unmounts and returns the number of requests zdbfs logged as
// answered over io_uring (-1 when it logged none: io_uring was not used).
func uringServed(t *testing.T, s *stack) int {
	t.Helper()
	p := s.fs
	s.unmount()
	m := regexp.MustCompile(`FUSE over io_uring ended.* requests=(\d+)`).FindStringSubmatch(p.output())
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestPosixURing runs go-fuse's POSIX suite with every request served
// over io_uring, and checks that they were.
func TestPosixURing(t *testing.T) {
	setURing(t, true)
	s := runPosix(t, "uring=on")
	if !strings.Contains(s.fs.output(), "io_uring=true") {
		t.Fatalf("zdbfs did not enable io_uring:\n%s", s.fs.output())
	}
	if n := uringServed(t, s); n < 1000 {
		t.Fatalf("%d requests served over io_uring, want the suite's (>= 1000)", n)
	}
}

// TestSemanticsURing runs the POSIX behaviour checks over io_uring.
func TestSemanticsURing(t *testing.T) {
	setURing(t, true)
	runSemantics(t, "uring=on")
}

// TestCrashSafetyURing kills zdbfs with SIGKILL while its rings are
// registered: the mount goes, nothing fsynced is lost, and a new zdbfs
// serves the tree over io_uring again.
func TestCrashSafetyURing(t *testing.T) {
	setURing(t, true)
	runCrashSafety(t, "uring=on")
}

// TestURingUnavailable: with io_uring off in the kernel, uring=on refuses
// to mount and names the setting, while the default (auto) mounts over
// /dev/fuse.
func TestURingUnavailable(t *testing.T) {
	setURing(t, false)
	s := newStack(t)
	p := start(t, filepath.Join(s.dir, "zdbfs-on.log"), "zdbfs", "-o", "autons,uring=on,unix="+s.sock, s.mnt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.stop(syscall.SIGKILL)
		t.Fatalf("uring=on without kernel support did not exit:\n%s", p.output())
	}
	if p.cmd.ProcessState.ExitCode() == 0 || !strings.Contains(p.output(), "enable_uring") {
		t.Fatalf("uring=on without kernel support: exit %d, want an error naming enable_uring:\n%s",
			p.cmd.ProcessState.ExitCode(), p.output())
	}
	if mounted(s.mnt) {
		t.Fatal("mount left behind by the refused uring=on")
	}
	s.mount()
	writeFile(t, filepath.Join(s.mnt, "f"), "over /dev/fuse")
	if got := readFile(t, filepath.Join(s.mnt, "f")); got != "over /dev/fuse" {
		t.Fatalf("read %q", got)
	}
	if n := uringServed(t, s); n != -1 {
		t.Fatalf("io_uring served %d requests with the kernel's io_uring off", n)
	}
}

// TestURingReplySizes checks that the reply structs zdbfs copies into the
// ring have the sizes the kernel expects (it rejects any other size for a
// fixed reply).
func TestURingReplySizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"fuse_entry_out", unsafe.Sizeof(fuse.EntryOut{}), 128},
		{"fuse_attr_out", unsafe.Sizeof(fuse.AttrOut{}), 104},
		{"fuse_open_out", unsafe.Sizeof(fuse.OpenOut{}), 16},
		{"fuse_create_out", unsafe.Sizeof(fuse.CreateOut{}), 144},
		{"fuse_write_out", unsafe.Sizeof(fuse.WriteOut{}), 8},
		{"fuse_statfs_out", unsafe.Sizeof(fuse.StatfsOut{}), 80},
		{"fuse_getxattr_out", unsafe.Sizeof(fuse.GetXAttrOut{}), 8},
		{"fuse_lk_out", unsafe.Sizeof(fuse.LkOut{}), 24},
		{"fuse_lseek_out", unsafe.Sizeof(fuse.LseekOut{}), 8},
		{"fuse_ioctl_out", unsafe.Sizeof(fuse.IoctlOut{}), 16},
		{"fuse_uring_ent_in_out", unsafe.Sizeof(uringEntInOut{}), 32},
		{"fuse_uring_cmd_req", unsafe.Sizeof(uringCmdReq{}), 24},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, the kernel's is %d", c.name, c.got, c.want)
		}
	}
	if inHeaderSize+uringOpInSize > inScratch || int(unsafe.Sizeof(fuse.SetAttrIn{})) > inScratch {
		t.Errorf("request scratch of %d bytes is too small", inScratch)
	}
	if unsafe.Sizeof(fuse.CreateOut{}) > outScratch*8 {
		t.Errorf("reply scratch of %d bytes is too small", outScratch*8)
	}
}

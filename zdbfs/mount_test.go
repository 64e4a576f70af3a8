package zdbfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/internal/testbin"
	"golang.org/x/sys/unix"
)

func TestMountParams(t *testing.T) {
	mo := &fuse.MountOptions{Name: "zdbfs", FsName: "zdbfs", MaxWrite: 1 << 20, AllowOther: true,
		Options: []string{"default_permissions", "ro", "noexec", "dev", "noatime", "fsname=vol1", "allow_root", "auto_unmount"}}
	source, flags, data := mountParams(mo, 7, syscall.S_IFDIR|0o755, 0, 0)
	if source != "vol1" {
		t.Errorf("source %q, want vol1 (fsname=)", source)
	}
	want := uintptr(unix.MS_NOSUID | unix.MS_RDONLY | unix.MS_NOEXEC | unix.MS_NOATIME)
	if flags != want {
		t.Errorf("flags %#x, want %#x", flags, want)
	}
	if !strings.HasPrefix(data, "fd=7,rootmode=40000,user_id=0,group_id=0,max_read=") ||
		!strings.HasSuffix(data, ",default_permissions,allow_other") {
		t.Errorf("data %q", data)
	}
	for _, bad := range []string{"ro", "noexec", "fsname", "allow_root", "auto_unmount"} {
		for _, f := range strings.Split(data, ",") {
			if k, _, _ := strings.Cut(f, "="); k == bad {
				t.Errorf("data %q passes %q to the kernel", data, f)
			}
		}
	}
}

func TestSetTimeGran(t *testing.T) {
	reply := make([]byte, outHeaderSize+int(unsafe.Sizeof(fuse.InitOut{})))
	putHeader := func(status int32, unique uint64) {
		h := (*fuse.OutHeader)(unsafe.Pointer(&reply[0]))
		h.Length, h.Status, h.Unique = uint32(len(reply)), status, unique
	}
	putHeader(0, 9)
	if err := setTimeGran(reply, 9); err != nil {
		t.Fatal(err)
	}
	if g := (*fuse.InitOut)(unsafe.Pointer(&reply[outHeaderSize])).TimeGran; g != timeGran {
		t.Errorf("TimeGran %d, want %d", g, timeGran)
	}
	if err := setTimeGran(reply, 8); err == nil {
		t.Error("reply to another request accepted")
	}
	putHeader(-int32(syscall.EIO), 9)
	if err := setTimeGran(reply, 9); err == nil {
		t.Error("error reply accepted")
	}
	putHeader(0, 9)
	if err := setTimeGran(reply[:outHeaderSize+24], 9); err == nil {
		t.Error("reply without time_gran accepted")
	}
}

// statNs returns the nanoseconds of mtime and ctime of path.
func statNs(t *testing.T, path string) (mtime, ctime syscall.Timespec) {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Stat(path, &st))
	return st.Mtim, st.Ctim
}

// TestTimeGranularity checks that the kernel keeps the times of zdbfs
// files in whole seconds, as the layout stores them: what stat shows does
// not change when the attribute cache expires or after a remount.
func TestTimeGranularity(t *testing.T) {
	s := newStack(t)
	s.mount()
	written := filepath.Join(s.mnt, "written")
	writeFile(t, written, "some bytes")
	set := filepath.Join(s.mnt, "set")
	writeFile(t, set, "")
	ts := []unix.Timespec{{Sec: 1700000000, Nsec: 123456789}, {Sec: 1700000001, Nsec: 987654321}}
	must(t, unix.UtimesNano(set, ts))

	m1, c1 := statNs(t, written)
	if m1.Nsec != 0 || c1.Nsec != 0 {
		t.Errorf("new written file: mtime %d.%09d ctime %d.%09d, want whole seconds", m1.Sec, m1.Nsec, c1.Sec, c1.Nsec)
	}
	m2, c2 := statNs(t, set)
	if m2.Sec != ts[1].Sec || m2.Nsec != 0 || c2.Nsec != 0 {
		t.Errorf("utimensat(%d.%09d): mtime %d.%09d ctime %d.%09d, want %d.000000000 and whole seconds",
			ts[1].Sec, ts[1].Nsec, m2.Sec, m2.Nsec, c2.Sec, c2.Nsec, ts[1].Sec)
	}
	s.unmount()
	s.mount()
	for _, c := range []struct {
		path         string
		mtime, ctime syscall.Timespec
	}{{written, m1, c1}, {set, m2, c2}} {
		m, ct := statNs(t, c.path)
		if m != c.mtime || ct != c.ctime {
			t.Errorf("%s after remount: mtime %v ctime %v, before %v %v", c.path, m, ct, c.mtime, c.ctime)
		}
	}
}

// TestSmallFileSetattrs counts the SETATTR requests of small files written
// in a loop for a few seconds: with one-second times the kernel keeps the
// times of a file written in the second it was created, so closing it sends
// no SETATTR; only a file created just before a second ends and written
// after it does. zdbfs stamps new inodes from the kernel's (coarse) clock:
// with the precise one, every file created in the few milliseconds the
// coarse clock lags at the start of a second cost one too (30-49 in 3 s,
// about 0.3 % of the files). Since Linux 6.13 the kernel's own time for
// FUSE can also run up to a tick ahead of the coarse clock (the multigrain
// timestamp floor, raised by fine-grained times other filesystems such as
// ext4 hand out), so with other I/O on the machine, as in CI where test
// packages run in parallel, 11-27 files in 3 s straddled a second. The
// check therefore fails only at 1 % of the files: what it must catch is a
// mount without one-second times, where every file costs a SETATTR.
func TestSmallFileSetattrs(t *testing.T) {
	s := newStack(t)
	s.mount()
	set0, write0 := requestCounts(t, s.mnt)
	files := 0
	for start := time.Now(); time.Since(start) < 3*time.Second; files++ {
		if err := os.WriteFile(fmt.Sprintf("%s/f%d", s.mnt, files), make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set1, write1 := requestCounts(t, s.mnt)
	t.Logf("%d files: %d SETATTR, %d WRITE", files, set1-set0, write1-write0)
	if write1-write0 != uint64(files) {
		t.Errorf("%d files: %d WRITE requests, want %d", files, write1-write0, files)
	}
	if set1-set0 > uint64(files)/100 {
		t.Errorf("%d files: %d SETATTR requests, want almost none (at most 1 %%)", files, set1-set0)
	}
}

// mountLine returns the /proc/self/mounts fields of mnt.
func mountLine(t *testing.T, mnt string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	must(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == mnt {
			return f
		}
	}
	t.Fatalf("%s not mounted", mnt)
	return nil
}

func hasOpts(opts string, want ...string) bool {
	have := map[string]bool{}
	for _, o := range strings.Split(opts, ",") {
		have[o] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// TestDirectMountOptions checks that the options reach the kernel on the
// direct mount.
func TestDirectMountOptions(t *testing.T) {
	t.Run("ro", func(t *testing.T) {
		s := newStack(t)
		s.mount()
		writeFile(t, filepath.Join(s.mnt, "f"), "x")
		s.unmount()
		s.mount("ro", "fsname=vol1")
		f := mountLine(t, s.mnt)
		if f[0] != "vol1" || f[2] != "fuse.zdbfs" || !hasOpts(f[3], "ro", "nosuid", "nodev") {
			t.Errorf("mount line %q", f)
		}
		if got := readFile(t, filepath.Join(s.mnt, "f")); got != "x" {
			t.Errorf("read %q", got)
		}
		wantErrno(t, "create on ro", os.WriteFile(filepath.Join(s.mnt, "g"), nil, 0o644), syscall.EROFS)
		wantErrno(t, "write on ro", os.WriteFile(filepath.Join(s.mnt, "f"), []byte("y"), 0o644), syscall.EROFS)
	})
	t.Run("allow_other", func(t *testing.T) {
		s := newStack(t)
		s.mount("allow_other", "noexec", "noatime")
		f := mountLine(t, s.mnt)
		if !hasOpts(f[3], "rw", "noexec", "noatime", "allow_other", "default_permissions") {
			t.Errorf("mount line %q", f)
		}
		writeFile(t, filepath.Join(s.mnt, "pub"), "x")
		must(t, os.Chmod(filepath.Join(s.mnt, "pub"), 0o644))
		as := func(script string) error {
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Dir = "/"
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
			return cmd.Run()
		}
		if err := as("cat " + filepath.Join(s.mnt, "pub")); err != nil {
			t.Errorf("uid 1000 cannot read a 0644 file with allow_other: %v", err)
		}
		if err := as("echo y >" + filepath.Join(s.mnt, "pub")); err == nil {
			t.Error("uid 1000 wrote a 0644 root file (default_permissions)")
		}
	})
}

// TestDirectMountEnd checks that the direct mount goes away when zdbfs is
// stopped by a signal, and with auto_unmount when it is killed, and that
// zdbfs keeps exactly one /dev/fuse descriptor (two over io_uring).
func TestDirectMountEnd(t *testing.T) {
	s := newStack(t)
	s.mount()
	writeFile(t, filepath.Join(s.mnt, "f"), "x")
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.fs.cmd.Process.Pid))
	dev := 0
	for _, e := range fds {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", s.fs.cmd.Process.Pid, e.Name())); l == "/dev/fuse" {
			dev++
		}
	}
	want := 1
	// the log line says whether the rings serve the mount; it may come a
	// moment after the mount shows
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(s.fs.output(), "msg=mounted") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(s.fs.output(), "io_uring=true") {
		want = 2 // the rings' own descriptor (uring.go)
	}
	if dev != want {
		t.Errorf("zdbfs holds %d /dev/fuse descriptors, want %d", dev, want)
	}
	p := s.fs
	p.stop(syscall.SIGTERM)
	s.fs = nil
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("zdbfs exited with %d after SIGTERM:\n%s", code, p.output())
	}
	if mounted(s.mnt) {
		syscall.Unmount(s.mnt, syscall.MNT_DETACH)
		t.Fatal("mount left after SIGTERM")
	}

	s.mount("auto_unmount")
	if got := readFile(t, filepath.Join(s.mnt, "f")); got != "x" {
		t.Errorf("read %q after remount", got)
	}
	p = s.fs
	s.fs = nil
	p.stop(syscall.SIGKILL)
	expectGone(t, s.mnt, "mount still there after zdbfs was killed with auto_unmount")
}

// fakeKernel returns a selfMount whose /dev/fuse is one end of a socket
// pair; the other end, returned too, plays the kernel.
func fakeKernel(t *testing.T) (*selfMount, int) {
	t.Helper()
	dev, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	m := &selfMount{mnt: "/nonexistent", dev: dev[0], ours: pair[0], theirs: pair[1], done: make(chan struct{})}
	t.Cleanup(func() {
		unix.Close(dev[1])
		unix.Close(m.theirs)
	})
	return m, dev[1]
}

func request(op uint32, unique uint64) []byte {
	b := make([]byte, inHeaderSize+64)
	h := (*fuse.InHeader)(unsafe.Pointer(&b[0]))
	h.Length, h.Opcode, h.Unique = uint32(len(b)), op, unique
	return b
}

// TestHandoff relays FUSE_INIT between a fake kernel and a fake go-fuse.
func TestHandoff(t *testing.T) {
	t.Run("init", func(t *testing.T) {
		m, kernel := fakeKernel(t)
		go m.handoff(64 << 10)
		_, err := unix.Write(kernel, request(opInit, 5))
		must(t, err)
		buf := make([]byte, 64<<10)
		n, err := unix.Read(m.theirs, buf) // go-fuse reads INIT
		must(t, err)
		if n != inHeaderSize+64 || (*fuse.InHeader)(unsafe.Pointer(&buf[0])).Unique != 5 {
			t.Fatalf("go-fuse got %d bytes %x", n, buf[:n])
		}
		reply := make([]byte, outHeaderSize+int(unsafe.Sizeof(fuse.InitOut{})))
		h := (*fuse.OutHeader)(unsafe.Pointer(&reply[0]))
		h.Length, h.Unique = uint32(len(reply)), 5
		(*fuse.InitOut)(unsafe.Pointer(&reply[outHeaderSize])).MaxWrite = 1 << 20
		_, err = unix.Write(m.theirs, reply)
		must(t, err)
		must(t, m.finish())
		n, err = unix.Read(kernel, buf)
		must(t, err)
		out := (*fuse.InitOut)(unsafe.Pointer(&buf[outHeaderSize]))
		if n != len(reply) || out.TimeGran != timeGran || out.MaxWrite != 1<<20 {
			t.Errorf("kernel got %d bytes, TimeGran %d, MaxWrite %d", n, out.TimeGran, out.MaxWrite)
		}
		// go-fuse's descriptor now is the kernel's connection
		_, err = unix.Write(m.theirs, []byte("next"))
		must(t, err)
		n, err = unix.Read(kernel, buf)
		must(t, err)
		if string(buf[:n]) != "next" {
			t.Errorf("kernel got %q after the hand-off", buf[:n])
		}
	})
	t.Run("not init", func(t *testing.T) {
		m, kernel := fakeKernel(t)
		go m.handoff(64 << 10)
		_, err := unix.Write(kernel, request(1, 5)) // LOOKUP
		must(t, err)
		n, err := unix.Read(m.theirs, make([]byte, 1024))
		if n != 0 || err != nil {
			t.Errorf("go-fuse read %d bytes, %v; want end of stream", n, err)
		}
		m.abort()
		if m.err == nil || !strings.Contains(m.err.Error(), "not FUSE_INIT") {
			t.Errorf("hand-off error %v", m.err)
		}
	})
	t.Run("go-fuse gone", func(t *testing.T) {
		m, kernel := fakeKernel(t)
		go m.handoff(64 << 10)
		_, err := unix.Write(kernel, request(opInit, 5))
		must(t, err)
		m.abort() // as run does when NewServer fails
		if m.err == nil {
			t.Error("hand-off without a reply succeeded")
		}
	})
}

// TestAbortDirectMount mounts for real and abandons the mount before
// go-fuse answers FUSE_INIT, as run does when go-fuse fails: the mount
// goes away and the hand-off reports why.
func TestAbortDirectMount(t *testing.T) {
	needFuse(t)
	dir := t.TempDir()
	mo := &fuse.MountOptions{Name: "zdbfs", FsName: fmt.Sprintf("zdbfs-abort-%d", os.Getpid()), MaxWrite: 1 << 20}
	m, err := mountSelf(dir, mo, nil, URingOff)
	must(t, err)
	t.Cleanup(func() {
		unix.Close(m.theirs)
		if mounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	if !mounted(dir) {
		t.Fatal("mountSelf returned without a mount")
	}
	// go-fuse's end gets the kernel's INIT
	buf := make([]byte, 64<<10)
	n, err := unix.Read(m.theirs, buf)
	must(t, err)
	if n < inHeaderSize || (*fuse.InHeader)(unsafe.Pointer(&buf[0])).Opcode != opInit {
		t.Fatalf("go-fuse's end got %d bytes %x, want FUSE_INIT", n, buf[:min(n, 16)])
	}
	m.abort()
	if mounted(dir) {
		t.Error("mount left after abort")
	}
	if m.err == nil {
		t.Error("abandoned hand-off reports no error")
	}
}

// TestDirectMountFails checks that zdbfs exits with an error, and leaves no
// mount, when it cannot mount.
func TestDirectMountFails(t *testing.T) {
	s := newStack(t)
	mnt := filepath.Join(s.dir, "missing")
	out, err := exec.Command(testbin.Path(t), "zdbfs", "-o", "autons,unix="+s.sock, mnt).CombinedOutput()
	if err == nil {
		t.Fatalf("zdbfs mounted a missing directory:\n%s", out)
	}
	if !strings.Contains(string(out), "mount") || mounted(mnt) {
		t.Errorf("zdbfs failed with %v, mounted %v:\n%s", err, mounted(mnt), out)
	}
}

// TestSignalAtMount sends SIGTERM the moment the mount appears, and kills
// zdbfs with auto_unmount the same way: neither may leave a dead mount.
func TestSignalAtMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the direct mount needs root")
	}
	s := newStack(t)
	for i, c := range []struct {
		sig  syscall.Signal
		opts string
	}{{syscall.SIGTERM, ""}, {syscall.SIGTERM, ""}, {syscall.SIGTERM, ""}, {syscall.SIGKILL, ",auto_unmount"}, {syscall.SIGKILL, ",auto_unmount"}} {
		p := start(t, filepath.Join(s.dir, fmt.Sprintf("zdbfs-sig-%d.log", i)),
			"zdbfs", "-o", "autons,unix="+s.sock+c.opts, s.mnt)
		for p.alive() && !mounted(s.mnt) {
			time.Sleep(time.Millisecond)
		}
		p.stop(c.sig)
		if c.sig == syscall.SIGTERM && p.cmd.ProcessState.ExitCode() != 0 {
			t.Errorf("%v at mount: zdbfs exited with %d:\n%s", c.sig, p.cmd.ProcessState.ExitCode(), p.output())
		}
		expectGone(t, s.mnt, fmt.Sprintf("%v at mount (options %q) left the mount behind", c.sig, c.opts))
	}
}

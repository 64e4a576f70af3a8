package zdbfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/internal/iouring"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
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

// TestURingSameAsDevFuse runs one script of system calls on a mount served
// over /dev/fuse and on one served over io_uring and compares what the
// application sees: results and errors of every call.
func TestURingSameAsDevFuse(t *testing.T) {
	setURing(t, true)
	var got [2]string
	for i, mode := range []string{"uring=off", "uring=on"} {
		s := newStack(t)
		s.mount("size=1G", mode)
		got[i] = uringScript(s.mnt)
		served := uringServed(t, s)
		if (mode == "uring=on") != (served > 0) {
			t.Fatalf("%s: %d requests served over io_uring", mode, served)
		}
	}
	if got[0] != got[1] {
		a, b := strings.Split(got[0], "\n"), strings.Split(got[1], "\n")
		for i := 0; i < len(a) && i < len(b); i++ {
			if a[i] != b[i] {
				t.Errorf("/dev/fuse: %s\nio_uring:  %s", a[i], b[i])
			}
		}
		if len(a) != len(b) {
			t.Errorf("transcripts of %d and %d lines", len(a), len(b))
		}
	}
}

// uringScript runs system calls under mnt and returns a transcript of
// their results (no inode numbers or times).
func uringScript(mnt string) string {
	var out strings.Builder
	p := func(name string) string { return filepath.Join(mnt, name) }
	log := func(what string, v ...any) { fmt.Fprintln(&out, append([]any{what}, v...)...) }
	e := func(err error) string {
		if err == nil {
			return "ok"
		}
		return err.Error()
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<17) // 2 MiB
	fd, err := unix.Open(p("f"), unix.O_CREAT|unix.O_RDWR|unix.O_EXCL, 0o640)
	log("create", err)
	n, err := unix.Pwrite(fd, big, 0)
	log("pwrite", n, e(err))
	n, err = unix.Pwrite(fd, []byte("tail"), 3<<20)
	log("pwrite hole", n, e(err))
	want := append(append(bytes.Clone(big), make([]byte, 1<<20)...), "tail"...)
	for _, sz := range []int{1, 4096, 65536, 1 << 20, 3 << 20} {
		b := make([]byte, sz)
		n, err := unix.Pread(fd, b, 1000)
		log("pread", sz, n, e(err), bytes.Equal(b[:n], want[1000:1000+n]))
	}
	log("fsync", e(unix.Fsync(fd)))
	for _, w := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
		off, err := unix.Seek(fd, 0, w)
		log("lseek", w, off, e(err))
	}
	log("fallocate", e(unix.Fallocate(fd, 0, 0, 4<<20)))
	log("ftruncate", e(unix.Ftruncate(fd, 1<<20+17)))
	var st unix.Stat_t
	log("fstat", e(unix.Fstat(fd, &st)), st.Size, st.Mode, st.Nlink, st.Blksize)
	var sx unix.Statx_t
	log("statx", e(unix.Statx(unix.AT_FDCWD, p("f"), 0, unix.STATX_ALL|unix.STATX_BTIME, &sx)), sx.Size, sx.Mode)

	g, err := unix.Open(p("g"), unix.O_CREAT|unix.O_RDWR, 0o600)
	log("create g", e(err))
	roff, woff := int64(0), int64(0)
	n, err = unix.CopyFileRange(fd, &roff, g, &woff, 300000, 0)
	log("copy_file_range", n, e(err))
	b := make([]byte, 300000)
	n, err = unix.Pread(g, b, 0)
	log("read copy", n, e(err), bytes.Equal(b[:n], big[:n]))
	unix.Close(g)

	buf := make([]byte, 64)
	for _, c := range []struct {
		op   string
		call func() (int, error)
	}{
		{"getxattr 0", func() (int, error) { return unix.Getxattr(p("f"), "user.a", nil) }},
		{"getxattr", func() (int, error) { return unix.Getxattr(p("f"), "user.a", buf) }},
		{"listxattr 0", func() (int, error) { return unix.Listxattr(p("f"), nil) }},
		{"listxattr", func() (int, error) { return unix.Listxattr(p("f"), buf) }},
		{"setxattr", func() (int, error) { return 0, unix.Setxattr(p("f"), "user.a", []byte("v"), 0) }},
		{"removexattr", func() (int, error) { return 0, unix.Removexattr(p("f"), "user.a") }},
	} {
		n, err := c.call()
		log(c.op, n, e(err))
	}
	unix.Close(fd)

	target := strings.Repeat("t/", 2000) + "end"
	log("symlink", e(unix.Symlink(target, p("l"))))
	lb := make([]byte, 8192)
	n, err = unix.Readlink(p("l"), lb)
	log("readlink", n, e(err), string(lb[:n]) == target)
	n, err = unix.Readlink(p("l"), lb[:10])
	log("readlink short", n, e(err), string(lb[:n]))
	log("link", e(unix.Link(p("f"), p("f2"))))
	log("rename noreplace", e(unix.Renameat2(unix.AT_FDCWD, p("f2"), unix.AT_FDCWD, p("g"), unix.RENAME_NOREPLACE)))
	log("rename exchange", e(unix.Renameat2(unix.AT_FDCWD, p("f2"), unix.AT_FDCWD, p("l"), unix.RENAME_EXCHANGE)))
	log("rename", e(unix.Rename(p("g"), p("h"))))
	log("mkfifo", e(unix.Mkfifo(p("fifo"), 0o644)))
	log("mknod", e(unix.Mknod(p("chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))))
	log("mkdir", e(unix.Mkdir(p("d"), 0o755)))
	for i := 0; i < 300; i++ {
		f, err := os.Create(p(fmt.Sprintf("d/%s-%03d", strings.Repeat("n", 200), i)))
		if err != nil {
			log("create in d", i, e(err))
			continue
		}
		f.Close()
	}
	ents, err := os.ReadDir(p("d"))
	log("readdir", len(ents), e(err))
	log("rmdir", e(unix.Rmdir(p("d"))))
	log("unlink", e(unix.Unlink(p("h"))), e(unix.Unlink(p("nope"))))
	log("access", e(unix.Access(p("f"), unix.R_OK|unix.W_OK)), e(unix.Access(p("nope"), unix.F_OK)))
	tf, err := unix.Open(mnt, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	log("O_TMPFILE", e(err))
	if err == nil {
		n, err := unix.Write(tf, []byte("anon"))
		log("write tmpfile", n, e(err))
		unix.Close(tf)
	}
	var sf unix.Statfs_t
	log("statfs", e(unix.Statfs(mnt, &sf)), sf.Blocks, sf.Bsize, sf.Namelen)
	log("utimes", e(unix.UtimesNano(p("f"), []unix.Timespec{{Sec: 1}, {Sec: 2}})))
	log("stat", e(unix.Stat(p("f"), &st)), st.Size, st.Mtim.Sec, st.Atim.Sec)
	log("chmod", e(unix.Chmod(p("f"), 0o4755)), e(unix.Stat(p("f"), &st)), st.Mode)
	if d, err := os.Open(mnt); err == nil {
		sb := make([]byte, 240)
		_, _, en := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ioctlStatistics, uintptr(unsafe.Pointer(&sb[0])))
		log("ioctl stats", en, binary.LittleEndian.Uint64(sb))
		_, _, en = unix.Syscall(unix.SYS_IOCTL, d.Fd(), ioctlStatistics, 0)
		log("ioctl stats bad address", en)
		_, _, en = unix.Syscall(unix.SYS_IOCTL, d.Fd(), 0x1234, 0)
		log("ioctl unknown", en)
		d.Close()
	}
	return out.String()
}

// panicFS is a file system whose GETATTR panics.
type panicFS struct{ fuse.RawFileSystem }

func (panicFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	panic("handler bug")
}

// uringTestEnt is a ring entry with a request of opcode op in it, as the
// kernel writes one.
func uringTestEnt(t *testing.T, op uint32, unique uint64) *uringEnt {
	t.Helper()
	e := &uringEnt{}
	if err := e.alloc(1 << 20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.free)
	h := (*fuse.InHeader)(unsafe.Pointer(&e.hdr[0]))
	h.Length, h.Opcode, h.Unique, h.NodeId = uint32(inHeaderSize), op, unique, 1
	io := (*uringEntInOut)(unsafe.Pointer(&e.hdr[uringInOutSize+uringOpInSize]))
	io.CommitID = unique
	return e
}

// TestURingHandlerPanic: a handler that panics is answered EIO and zdbfs
// goes on, as go-fuse does over /dev/fuse (its PanicHandler), instead of
// the panic ending the process and every mount with it.
func TestURingHandlerPanic(t *testing.T) {
	e := uringTestEnt(t, opGetattr, 42)
	s := &uringServer{fs: panicFS{fuse.NewDefaultRawFileSystem()}, log: logrus.NewEntry(logrus.New())}
	s.log.Logger.SetOutput(io.Discard)
	var commit uint64
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("the handler's panic reached the ring thread: %v", r)
			}
		}()
		commit, _ = e.handle(s)
	}()
	out := (*fuse.OutHeader)(unsafe.Pointer(&e.hdr[0]))
	io := (*uringEntInOut)(unsafe.Pointer(&e.hdr[uringInOutSize+uringOpInSize]))
	if commit != 42 || out.Unique != 42 || out.Status != -int32(syscall.EIO) || io.PayloadSz != 0 {
		t.Fatalf("reply: commit %d unique %d status %d payload %d, want 42 42 %d 0",
			commit, out.Unique, out.Status, io.PayloadSz, -int32(syscall.EIO))
	}
}

// TestURingSetupFailureReleases: a thread whose setup fails after its ring
// was made closes the ring (newURingServer gives up and returns).
func TestURingSetupFailureReleases(t *testing.T) {
	r, err := iouring.New(4, iouring.SetupSingleIssuer|iouring.SetupDeferTaskrun|iouring.SetupCoopTaskrun)
	if err != nil {
		t.Skipf("no io_uring here: %v", err)
	}
	r.Close()
	fds := func() int {
		d, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(d)
	}
	before := fds()
	s := &uringServer{payload: 1 << 60, start: make(chan int)} // the payload mapping fails
	th := &uringThread{srv: s}
	ready := make(chan error)
	s.wg.Add(1)
	go th.run(ready)
	if err := <-ready; err == nil {
		t.Fatal("setup of a 1 EiB payload succeeded")
	}
	s.wg.Wait()
	if after := fds(); after != before {
		t.Fatalf("%d descriptors open after the failed setup, %d before", after, before)
	}
}

// onCPU runs f on an OS thread bound to cpu, so that the FUSE requests it
// makes go to that CPU's io_uring queue.
func onCPU(cpu int, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- err
			return
		}
		errc <- nil
		f()
	}()
	return <-errc
}

// TestURingQueueNotHeldUp: requests made on one CPU that wait for zdb (here
// stopped) must not hold up a request from that CPU that zdbfs answers
// from memory, as with /dev/fuse, where go-fuse serves any number of
// requests at once. With a fixed number of ring entries per CPU, once all
// were serving blocked requests, the kernel queued every further request
// made on that CPU behind them.
func TestURingQueueNotHeldUp(t *testing.T) {
	setURing(t, true)
	s := newStack(t)
	s.mount("uring=on")
	const blockers = uringThreads + 2
	for i := 0; i < blockers; i++ {
		writeFile(t, filepath.Join(s.mnt, fmt.Sprint("f", i)), "data")
	}
	s.unmount()
	s.mount("uring=on") // nothing cached: a LOOKUP of f<i> reads its inode from zdb
	zdb := s.zdb.cmd.Process
	must(t, zdb.Signal(syscall.SIGSTOP))
	resumed := false
	resume := func() {
		if !resumed {
			zdb.Signal(syscall.SIGCONT)
			resumed = true
		}
	}
	t.Cleanup(resume)

	tids := make(chan int, blockers)
	done := make(chan error, blockers)
	for i := 0; i < blockers; i++ {
		if err := onCPU(0, func() {
			tids <- unix.Gettid()
			_, err := os.ReadFile(filepath.Join(s.mnt, fmt.Sprint("f", i)))
			done <- err
		}); err != nil {
			t.Skipf("cannot bind a thread to CPU 0: %v", err)
		}
	}
	// every blocker waits for its answer: the kernel has handed each one
	// to an entry, or queued it for lack of one
	for i := 0; i < blockers; i++ {
		tid := <-tids
		wchan := fmt.Sprintf("/proc/self/task/%d/wchan", tid)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			// request_wait_answer, or another fuse function where inlined
			if b, _ := os.ReadFile(wchan); strings.Contains(string(b), "wait_answer") ||
				strings.Contains(string(b), "fuse") {
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(wchan)
				t.Fatalf("blocker thread %d is not waiting for FUSE (wchan %q)", tid, b)
			}
		}
	}

	// an entry of CPU 0's queue is free again (the kernel queues a
	// request that finds none until an entry of that queue answers, so
	// the lookup must come after): a zdbfs thread waits for a request on
	// CPU 0
	idle := func() bool {
		pid := s.fs.cmd.Process.Pid
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			w, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, task.Name()))
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
			if string(w) == "io_cqring_wait" && len(f) > 36 && f[36] == "0" {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(20 * time.Second); !idle(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			resume()
			t.Fatalf("no entry of CPU 0's queue free while %d of its requests wait for zdb", blockers)
		}
	}
	answered := make(chan error, 1)
	must(t, onCPU(0, func() {
		_, err := os.Stat(filepath.Join(s.mnt, "absent"))
		answered <- err
	}))
	select {
	case err := <-answered:
		if !os.IsNotExist(err) {
			t.Errorf("stat of an absent name: %v, want ENOENT", err)
		}
	case <-time.After(30 * time.Second):
		resume()
		<-answered
		t.Errorf("a LOOKUP zdbfs answers from memory waited for %d requests blocked on zdb", blockers)
	}
	resume()
	for i := 0; i < blockers; i++ {
		if err := <-done; err != nil {
			t.Errorf("read after zdb resumed: %v", err)
		}
	}
}

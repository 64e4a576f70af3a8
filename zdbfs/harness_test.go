package zdbfs

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/zdb/client"
)

// needFuse skips tests that mount a filesystem when the machine cannot.
func needFuse(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE filesystems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("needs fusermount3")
	}
}

// proc is a started qsfs subcommand.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func start(t *testing.T, logName string, args ...string) *proc {
	t.Helper()
	lf, err := os.Create(logName)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testbin.Path(t), args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logName}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends sig and waits for the process to exit.
func (p *proc) stop(sig syscall.Signal) {
	if p.alive() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// stack is one zdb plus one zdbfs mount in a private directory.
type stack struct {
	t    *testing.T
	dir  string
	sock string
	mnt  string
	zdb  *proc
	fs   *proc

	zdbArgs []string // extra zdb flags
}

func newStack(t *testing.T, zdbArgs ...string) *stack {
	t.Helper()
	needFuse(t)
	dir, err := os.MkdirTemp("", fmt.Sprintf("qsfs-zdbfs-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, sock: filepath.Join(dir, "zdb.sock"), mnt: filepath.Join(dir, "mnt"), zdbArgs: zdbArgs}
	os.Chmod(dir, 0o755) // other users must reach the mountpoint
	os.Mkdir(s.mnt, 0o755)
	t.Cleanup(func() {
		s.unmount()
		if s.zdb != nil {
			s.zdb.stop(syscall.SIGTERM)
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("kept %s for inspection", dir)
		}
	})
	s.startZdb()
	return s
}

func (s *stack) startZdb() {
	s.t.Helper()
	os.Remove(s.sock)
	args := append([]string{"zdb", "--socket", s.sock,
		"--data", filepath.Join(s.dir, "data"), "--index", filepath.Join(s.dir, "index")}, s.zdbArgs...)
	s.zdb = start(s.t, filepath.Join(s.dir, "zdb.log"), args...)
	waitZdb(s.t, s.zdb, s.sock)
}

// waitZdb waits until the zdb p answers PING on its unix socket sock.
func waitZdb(t *testing.T, p *proc, sock string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := client.Dial("unix", sock, time.Second); err == nil {
			err = c.Ping()
			c.Close()
			if err == nil {
				return
			}
		}
		if !p.alive() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("zdb did not come up:\n%s", p.output())
}

func mounted(mnt string) bool {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 2 && fields[1] == mnt && fields[2] == "fuse.zdbfs" {
			return true
		}
	}
	return false
}

// mount starts zdbfs over the stack's zdb and waits for the mount.
func (s *stack) mount(opts ...string) {
	s.t.Helper()
	o := append([]string{"autons", "unix=" + s.sock}, opts...)
	s.fs = start(s.t, filepath.Join(s.dir, fmt.Sprintf("zdbfs-%d.log", time.Now().UnixNano())),
		"zdbfs", "-o", strings.Join(o, ","), s.mnt)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if mounted(s.mnt) {
			// a direct mount shows before zdbfs answers FUSE_INIT; a stat
			// of the root waits for that (an unmount right away would
			// otherwise end zdbfs before it served anything)
			if _, err := os.Stat(s.mnt); err != nil {
				s.t.Fatalf("stat %s: %v\n%s", s.mnt, err, s.fs.output())
			}
			return
		}
		if !s.fs.alive() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("zdbfs did not mount:\n%s", s.fs.output())
}

// unmount unmounts cleanly and waits for zdbfs to write back and exit.
func (s *stack) unmount() {
	if s.fs == nil {
		return
	}
	if mounted(s.mnt) {
		if out, err := exec.Command("fusermount3", "-u", s.mnt).CombinedOutput(); err != nil {
			s.t.Logf("fusermount3 -u: %v %s", err, out)
			syscall.Unmount(s.mnt, syscall.MNT_DETACH)
		}
	}
	s.fs.stop(syscall.SIGTERM)
	if code := s.fs.cmd.ProcessState.ExitCode(); code != 0 {
		s.t.Errorf("zdbfs exited with %d:\n%s", code, s.fs.output())
	}
	s.fs = nil
}

// crash kills zdbfs with SIGKILL and removes the dead mount.
func (s *stack) crash() {
	s.fs.stop(syscall.SIGKILL)
	s.fs = nil
	if err := syscall.Unmount(s.mnt, syscall.MNT_DETACH); err != nil {
		exec.Command("fusermount3", "-uz", s.mnt).Run()
	}
}

// expectGone waits up to 10 s for the mount at mnt to go away (e.g. the
// auto_unmount watchdog detaching it) and fails with what otherwise;
// a mount still there is detached.
func expectGone(t *testing.T, mnt, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for mounted(mnt) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if mounted(mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		t.Fatal(what)
	}
}

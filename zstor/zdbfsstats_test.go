package zstor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/internal/zdbproc"
)

func isMounted(mnt string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == mnt {
			return true
		}
	}
	return false
}

// TestZdbfsStats reads the statistics ioctl of a real `qsfs zdbfs` mount,
// as the daemon does when zdbfs_mountpoint is set.
func TestZdbfsStats(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE mount needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("fusermount3 not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "zdb.sock")
	zdbproc.Start(t, zdbproc.Options{Dir: dir, Socket: sock, CleanupKill: true,
		Args: []string{"--mode", "seq", "--data", filepath.Join(dir, "data"), "--index", filepath.Join(dir, "index")}})

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	fs := exec.Command(testbin.Path(t), "zdbfs", "-o", "unix="+sock+",autons", mnt)
	fs.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := fs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("fusermount3", "-u", "-z", mnt).Run()
		fs.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { fs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fs.Process.Kill()
			<-done
		}
	})
	waitFor(t, 30*time.Second, "zdbfs mount", func() bool { return isMounted(mnt) })
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := readZdbfsStats(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if v[0] != 2 || v[1] == 0 || v[12+6] == 0 || v[28] < 5 {
		t.Fatalf("stats: version %d fuse_reqs %d write %d bytes_written %d", v[0], v[1], v[18], v[28])
	}
}

package zstor

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
	"github.com/qsfs/qsfs/zstor/internal/zdbtest"
)

func lockData(t *testing.T, cl *zdbtest.Cluster, lock string) {
	t.Helper()
	for _, z := range cl.All {
		c, err := client.Dial("tcp", z.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Do("NSSET", zdbtest.DataNS, "lock", lock); err != nil {
			t.Fatalf("lock data namespace: %v", err)
		}
		c.Close()
	}
}

// TestFailedUploadSurvivesRestart: a background store that cannot be
// written is retried, shown in status, recorded in the metadata store,
// and uploaded by the next daemon after a forced exit.
func TestFailedUploadSurvivesRestart(t *testing.T) {
	cl := zdbtest.StartCluster(t, 2, 2)
	dir := t.TempDir()
	cfg := cl.Config(2, 4, 0, 0)
	cfg.Socket = filepath.Join(dir, "zstor.sock")
	cfg.PidFile = filepath.Join(dir, "zstor.pid")
	cfgPath := filepath.Join(dir, "zstor.toml")
	writeConfig(t, cfgPath, cfg)
	lockData(t, cl, "1")

	m := startMonitor(t, cfgPath, cfg.Socket, "QSFS_ZSTOR_HEALTH_INTERVAL=200ms")
	f := filepath.Join(dir, "pending")
	os.WriteFile(f, []byte(strings.Repeat("not yet archived ", 1000)), 0o644)
	if _, serr, err := zstorCLI(t, cfgPath, "store", "-n", "-s", "-f", f); err != nil {
		t.Fatalf("queue store: %v %s", err, serr)
	}
	waitFor(t, 30*time.Second, "failing upload in status", func() bool {
		out, _, err := zstorCLI(t, cfgPath, "status")
		return err == nil && strings.Contains(out, "1 failing") && strings.Contains(out, f)
	})
	// A clean stop waits for the upload; a second signal forces the exit
	// and names the upload left behind.
	m.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		t.Fatal("monitor did not exit on the second SIGTERM")
	}
	if !strings.Contains(m.out.String(), "exiting with upload not done") {
		t.Errorf("forced exit did not log the pending upload:\n%s", m.out.String())
	}
	if out, _, _ := zstorCLI(t, cfgPath, "check", "-f", f); out != "" {
		t.Fatalf("file stored while the backends were locked")
	}

	lockData(t, cl, "0")
	m2 := startMonitor(t, cfgPath, cfg.Socket)
	waitFor(t, 30*time.Second, "upload by the next daemon", func() bool {
		out, _, err := zstorCLI(t, cfgPath, "check", "-f", f)
		return err == nil && out != ""
	})
	if !strings.Contains(m2.out.String(), "recorded as failed by an earlier run") {
		t.Errorf("restarted daemon did not pick up the recorded failure:\n%s", m2.out.String())
	}
}

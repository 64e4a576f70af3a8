package driver

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestKillStale(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "0123456789abcdef")
	other := exec.Command("sh", "-c", "sleep 600", dir+"x/")        // a sibling path: kept
	stale := exec.Command("sh", "-c", "sleep 600", dir+"/zdb.sock") // names the directory: stopped
	for _, c := range []*exec.Cmd{other, stale} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	done := make(chan error, 1)
	go func() { done <- stale.Wait() }()
	killStale(dir, logrus.NewEntry(logrus.New()))
	if err := <-done; err == nil {
		t.Error("stale process exited cleanly; want killed by a signal")
	}
	if st, ok := readProcStat(other.Process.Pid); !ok || st.State == 'Z' {
		t.Error("a process of another directory was stopped")
	}
	if st, ok := readProcStat(stale.Process.Pid); ok && st.State != 'Z' {
		t.Errorf("stale process still runs: %+v", st)
	}
}

func TestWaitGroupGone(t *testing.T) {
	c := exec.Command("sleep", "0.2")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := c.Process.Pid
	go c.Wait()
	// sleep is in the test's process group, not its own: a group nobody
	// leads is gone at once, the test's own group never is.
	if !waitGroupGone(pgid, 0) {
		t.Error("group of a non-leader reported alive")
	}
	if waitGroupGone(syscall.Getpgrp(), 0) {
		t.Error("the test's own process group reported gone")
	}
}

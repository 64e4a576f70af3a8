package plugin

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/qsfs/qsfs/driver"
)

// reapOrphans makes the plugin the subreaper of everything it starts and
// reaps orphaned zombies: zdb's hook processes that outlive zdb are
// reparented to the plugin (it is PID 1 in a managed plugin anyway). Only
// zombies outside the plugin's own process group that are not supervised
// stack processes are reaped, so exec.Cmd.Wait of the plugin's direct
// children (iptables, the stack processes) is never disturbed.
func reapOrphans(ctx context.Context, owns func(pid int) bool, log *logrus.Logger) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.WithError(err).Warn("cannot become a subreaper; orphaned hook processes go to init")
	}
	self, pgrp := os.Getpid(), unix.Getpgrp()
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			time.Sleep(50 * time.Millisecond)
		case <-tick.C:
		}
		for _, p := range driver.Procs() {
			if p.Ppid != self || p.State != 'Z' || p.Pgid == pgrp || owns(p.Pid) {
				continue
			}
			var ws unix.WaitStatus
			if pid, err := unix.Wait4(p.Pid, &ws, unix.WNOHANG, nil); err == nil && pid > 0 {
				log.WithField("pid", pid).Debug("reaped an orphaned process")
			}
		}
	}
}

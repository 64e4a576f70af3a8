package driver

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// ProcStat is what qsfs reads from /proc/<pid>/stat.
type ProcStat struct {
	Pid, Ppid, Pgid int
	State           byte
}

// readProcStat parses /proc/<pid>/stat (the command name may hold spaces
// and parentheses; the fields after the last ')' are fixed).
func readProcStat(pid int) (ProcStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ProcStat{}, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 3 {
		return ProcStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || len(f[0]) != 1 {
		return ProcStat{}, false
	}
	return ProcStat{Pid: pid, Ppid: ppid, Pgid: pgid, State: f[0][0]}, true
}

// Procs returns the stat of every process in /proc.
func Procs() []ProcStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []ProcStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// waitGroupGone waits up to timeout until no live process is left in
// process group pgid (a stopped zdb's hook processes). It reports whether
// the group is gone.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		live := false
		for _, p := range Procs() {
			if p.Pgid == pgid && p.State != 'Z' {
				live = true
				break
			}
		}
		if !live {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// OwnsPID reports whether pid is one of the supervised stack processes, so
// an orphan reaper leaves it to its exec.Cmd.
func (d *Driver) OwnsPID(pid int) bool {
	d.mu.Lock()
	vs := make([]*vol, 0, len(d.vols))
	for _, v := range d.vols {
		vs = append(vs, v)
	}
	d.mu.Unlock()
	var stacks []*Stack
	for _, v := range vs {
		if _, _, _, st := v.snapshot(); st != nil {
			stacks = append(stacks, st)
		}
	}
	if g, ok := d.graveyard.(*graveyard); ok {
		g.mu.Lock()
		for _, st := range g.stacks {
			stacks = append(stacks, st)
		}
		g.mu.Unlock()
	}
	for _, st := range stacks {
		st.viewMu.Lock()
		procs := []*Process{st.zstor, st.zdb, st.zdbfs}
		st.viewMu.Unlock()
		for _, p := range procs {
			if p != nil && p.ownsPID(pid) {
				return true
			}
		}
	}
	return false
}

func (p *Process) ownsPID(pid int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && p.cmd.Process != nil && p.cmd.Process.Pid == pid
}

// killStale stops processes whose command line names a path under dir: a
// stack left by a previous plugin instance (a host-mode plugin that was
// killed). SIGTERM first, SIGKILL after a few seconds.
func killStale(dir string, log *logrus.Entry) {
	needle := []byte(strings.TrimSuffix(dir, "/") + "/")
	self := os.Getpid()
	var pids []int
	for _, p := range Procs() {
		if p.Pid == self || p.State == 'Z' {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/cmdline")
		if err == nil && bytes.Contains(cmd, needle) {
			pids = append(pids, p.Pid)
		}
	}
	if len(pids) == 0 {
		return
	}
	log.WithField("pids", pids).Warn("stopping processes left by a previous plugin instance")
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(8 * time.Second)
	for _, pid := range pids {
		for {
			st, ok := readProcStat(pid)
			if !ok || st.State == 'Z' {
				break
			}
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

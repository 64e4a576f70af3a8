package zdbproc

import (
	"net"
	"strconv"
	"syscall"
	"time"
)

// signalWait is how long Signal waits for the process to exit.
const signalWait = 20 * time.Second

// Restart starts the process again with the same options, directory and
// port, stopping it first (Stop) if it still runs, and waits until it
// answers PING.
func (p *Proc) Restart() {
	p.t.Helper()
	p.Stop()
	p.start(false)
}

// Signal sends sig and waits for the process to exit, failing the test if
// it does not within 20s. It returns the exit code, 128+signal when killed
// by a signal.
func (p *Proc) Signal(sig syscall.Signal) int {
	p.t.Helper()
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
	case <-time.After(signalWait):
		p.t.Fatalf("zdb (pid %d) did not exit on %v\n%s", p.Pid(), sig, p.out)
	}
	return p.ExitCode()
}

// Stop sends SIGTERM, waits up to 20s, then sends SIGKILL, and waits for the
// exit. It returns the exit code (as Signal). It never fails the test, so
// cleanups may call it.
func (p *Proc) Stop() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return -1
	}
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.ExitCode()
}

// Kill sends SIGKILL (a crash) and waits for the exit.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	if !p.exited() {
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the current process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitCode is the exit code of the current process once it has exited:
// 128+signal when a signal killed it, -1 while it runs.
func (p *Proc) ExitCode() int {
	if !p.exited() || p.cmd.ProcessState == nil {
		return -1
	}
	if st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if st.Signaled() {
			return 128 + int(st.Signal())
		}
		return st.ExitStatus()
	}
	return p.cmd.ProcessState.ExitCode()
}

// Pid is the process id of the current process.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Port is the TCP port (0 without TCP).
func (p *Proc) Port() int { return p.port }

// Addr is the TCP address clients dial: the listen address and port.
func (p *Proc) Addr() string { return net.JoinHostPort(p.listen(), strconv.Itoa(p.port)) }

// Socket is the unix socket path ("" for none).
func (p *Proc) Socket() string { return p.o.Socket }

// Dir is the process's working directory.
func (p *Proc) Dir() string { return p.o.Dir }

// Output is what the current process wrote to stdout and stderr (the last
// MiB of it).
func (p *Proc) Output() string { return p.out.String() }

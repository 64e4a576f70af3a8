package driver

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// logLines is how many output lines of each process are kept for errors.
const logLines = 40

// lineRing keeps the last lines a process printed.
type lineRing struct {
	mu    sync.Mutex
	lines []string
}

func (r *lineRing) add(l string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, l)
	if len(r.lines) > logLines {
		r.lines = r.lines[len(r.lines)-logLines:]
	}
}

// Tail returns the last n lines joined by newlines.
func (r *lineRing) Tail(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// Pdeathsig is delivered when the *thread* that forked the child exits, and
// Go discards threads that end locked (for example after a failed setns in
// another goroutine). Every stack process is therefore started from one
// thread that is locked for the life of the plugin, so they get SIGTERM only
// when the plugin itself dies.
var (
	forkerOnce sync.Once
	forker     chan func()
)

func startPinned(cmd *exec.Cmd) error {
	forkerOnce.Do(func() {
		forker = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range forker {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	forker <- func() { errc <- cmd.Start() }
	return <-errc
}

// Process is one supervised child (zdb, zdbfs or zstor): started with
// build(), restarted with exponential backoff when it dies, stopped with a
// signal and a deadline. Its output goes to the plugin log at debug level
// and the last lines are kept for error messages.
type Process struct {
	Name      string
	build     func() *exec.Cmd
	beforeRun func() // called before each restart (not the first start)
	log       *logrus.Entry
	out       lineRing

	mu       sync.Mutex
	cmd      *exec.Cmd
	running  bool
	stopping bool
	exits    int
	restarts int
	lastExit string
	wake     chan struct{} // closed by Stop to cut a backoff sleep short
	done     chan struct{} // closed when the supervisor loop ends
	exited   chan struct{} // closed when the current run ends
}

func newProcess(name string, log *logrus.Entry, build func() *exec.Cmd) *Process {
	return &Process{Name: name, build: build, log: log.WithField("process", name),
		wake: make(chan struct{}), done: make(chan struct{})}
}

// Start runs the process and supervises it until Stop.
func (p *Process) Start() error {
	if err := p.run(); err != nil {
		close(p.done)
		return err
	}
	go p.supervise()
	return nil
}

func (p *Process) run() error {
	cmd := p.build()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	if err := startPinned(cmd); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start %s (%s): %w", p.Name, cmd.Path, err)
	}
	w.Close()
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.running, p.exited = cmd, true, exited
	p.mu.Unlock()
	p.log.WithField("pid", cmd.Process.Pid).Debug("process started")
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.out.add(line)
			p.log.Debug(line)
		}
		r.Close()
	}()
	go func() {
		err := cmd.Wait()
		// Let the last lines reach the ring before anyone reads it; a
		// grandchild (a zdb hook) may keep the pipe open, so not forever.
		select {
		case <-outDone:
		case <-time.After(500 * time.Millisecond):
		}
		p.mu.Lock()
		p.running = false
		p.exits++
		if err != nil {
			p.lastExit = err.Error()
		} else {
			p.lastExit = "exit status 0"
		}
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

func (p *Process) supervise() {
	defer close(p.done)
	backoff := time.Second
	for {
		p.mu.Lock()
		exited := p.exited
		p.mu.Unlock()
		<-exited
		p.mu.Lock()
		stopping, last := p.stopping, p.lastExit
		p.mu.Unlock()
		if stopping {
			return
		}
		p.log.WithField("exit", last).WithField("output", p.out.Tail(5)).Warn("process died; restarting")
		started := time.Now()
		select {
		case <-p.wake:
			return
		case <-time.After(backoff):
		}
		if backoff < 30*time.Second {
			backoff *= 2
		}
		if p.beforeRun != nil {
			p.beforeRun()
		}
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return
		}
		p.restarts++
		p.mu.Unlock()
		if err := p.run(); err != nil {
			p.log.WithError(err).Error("restart failed")
			p.mu.Lock()
			p.exited = closedChan()
			p.mu.Unlock()
			continue
		}
		if time.Since(started) > 2*time.Minute {
			backoff = time.Second
		}
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Stop sends sig, waits up to timeout for the process to end, then kills its
// process group. It stops the supervision for good.
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) {
	p.mu.Lock()
	if !p.stopping {
		p.stopping = true
		close(p.wake)
	}
	cmd, running, exited := p.cmd, p.running, p.exited
	p.mu.Unlock()
	if running && cmd != nil {
		_ = cmd.Process.Signal(sig)
		select {
		case <-exited:
		case <-time.After(timeout):
			p.log.WithField("timeout", timeout).Warn("process did not stop; killing it")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	<-p.done
}

// Signal sends sig to the running process.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running || p.cmd == nil {
		return fmt.Errorf("%s is not running", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Exited returns a channel closed when the current run ends.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// ProcessStatus is a process's health for Status and metrics.
type ProcessStatus struct {
	Running  bool
	Pid      int
	Restarts int
	LastExit string
}

// Status reports the process's health.
func (p *Process) Status() ProcessStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := ProcessStatus{Running: p.running, Restarts: p.restarts, LastExit: p.lastExit}
	if p.running && p.cmd != nil {
		st.Pid = p.cmd.Process.Pid
	}
	return st
}

// String formats the status for docker volume inspect.
func (s ProcessStatus) String() string {
	if s.Running {
		return fmt.Sprintf("running (pid %d, %d restarts)", s.Pid, s.Restarts)
	}
	if s.LastExit != "" {
		return "stopped (" + s.LastExit + ")"
	}
	return "stopped"
}

// Tail returns the last n lines of the process's output.
func (p *Process) Tail(n int) string { return p.out.Tail(n) }

package zdbproc

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/netns"
)

// Options says how to run one `qsfs zdb` process.
type Options struct {
	// Bin is the qsfs binary; "" is testbin.Path(t).
	Bin string
	// Dir is the process's working directory (zdb's default data and
	// index directories are below it); "" is a new t.TempDir().
	Dir string
	// TCP listens on Host:Port.
	TCP bool
	// Host is the listen address ("" is 127.0.0.1); "::" or "0.0.0.0"
	// listen on all addresses and are probed on loopback.
	Host string
	// Port is the TCP port; 0 probes a free one on 127.0.0.1. A probed
	// port that another process takes before zdb binds it is replaced by a
	// new one, up to three times, on the first start only: a restart keeps
	// the port.
	Port int
	// Socket is a unix socket path to listen on ("" for none). When set,
	// readiness is probed there, else on TCP. With TCP too, zdb runs with
	// --dualnet.
	Socket string
	// NS runs zdb inside this network namespace (a name under /run/netns
	// or a path) through `qsfs nsexec`; the TCP probe runs there too.
	NS string
	// Args are further zdb flags (after --listen, --port, --socket and
	// --dualnet).
	Args []string
	// Env is added to the test's environment.
	Env []string
	// ReadyTimeout bounds the wait for PING (default 30s).
	ReadyTimeout time.Duration
	// CleanupKill makes t.Cleanup send SIGKILL at once instead of SIGTERM
	// with a grace period.
	CleanupKill bool
}

// Proc is one running (or stopped) `qsfs zdb` process.
type Proc struct {
	t       testing.TB
	o       Options
	port    int
	probed  bool // port came from freePort
	cmd     *exec.Cmd
	out     *output
	outs    []*output // of every process started, checked in t.Cleanup
	done    chan struct{}
	retries int
}

// stopGrace is how long Stop waits after SIGTERM before SIGKILL: zdb may
// wait for its namespace-closing hooks.
const stopGrace = 20 * time.Second

// Start runs `qsfs zdb` as o says and waits until it answers PING. It
// fails the test when zdb exits or does not answer in time. The process is
// stopped by PID when the test ends, and the test fails if the output of
// any process it started (restarts included) shows a data race or a panic.
func Start(t testing.TB, o Options) *Proc {
	t.Helper()
	if o.Bin == "" {
		o.Bin = testbin.Path(t)
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	p := &Proc{t: t, o: o, port: o.Port}
	if o.TCP && p.port == 0 {
		p.probed = true
		p.port = p.newPort()
	}
	t.Cleanup(func() {
		if p.o.CleanupKill {
			p.Kill()
		} else {
			p.Stop()
		}
		// a -race build of qsfs (QSFS_BIN) reports races on its output
		for _, o := range p.outs {
			if out := o.String(); strings.Contains(out, "DATA RACE") || strings.Contains(out, "panic:") {
				t.Errorf("zdb reported a problem:\n%s", out)
			}
		}
	})
	p.start(true)
	return p
}

func (p *Proc) newPort() int {
	p.t.Helper()
	port, err := freePort()
	if err != nil {
		p.t.Fatal(err)
	}
	return port
}

func (p *Proc) args() []string {
	args := []string{"zdb"}
	if p.o.TCP {
		args = append(args, "--listen", p.listen(), "--port", strconv.Itoa(p.port))
	}
	if p.o.Socket != "" {
		args = append(args, "--socket", p.o.Socket)
	}
	if p.o.TCP && p.o.Socket != "" {
		args = append(args, "--dualnet") // zdb serves only the socket otherwise
	}
	return append(args, p.o.Args...)
}

func (p *Proc) listen() string {
	if p.o.Host == "" {
		return "127.0.0.1"
	}
	return p.o.Host
}

func (p *Proc) start(first bool) {
	t := p.t
	t.Helper()
	if p.o.NS != "" {
		p.cmd = netns.Command(p.o.Bin, p.o.NS, p.o.Bin, p.args()...)
	} else {
		p.cmd = exec.Command(p.o.Bin, p.args()...)
	}
	p.cmd.Dir = p.o.Dir
	if len(p.o.Env) > 0 {
		p.cmd.Env = append(os.Environ(), p.o.Env...)
	}
	p.out = &output{}
	p.outs = append(p.outs, p.out)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// killed with the test binary (a timeout panic, a crash)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start zdb %v: %v", p.cmd.Args, err)
	}
	done := make(chan struct{})
	p.done = done
	go func(cmd *exec.Cmd) { cmd.Wait(); close(done) }(p.cmd)

	network, addr := "tcp", p.probeAddr()
	if p.o.Socket != "" {
		network, addr = "unix", p.o.Socket
	}
	ns := p.o.NS
	if network == "unix" {
		ns = "" // a unix socket is reached through the file system
	}
	deadline := time.Now().Add(p.o.ReadyTimeout)
	for {
		err := ping(ns, network, addr, time.Second)
		if err == nil {
			return
		}
		select {
		case <-done:
			if first && p.probed && p.retries < 3 && strings.Contains(p.out.String(), "address already in use") {
				// another process took the free port between the probe
				// and zdb's bind: pick a new one
				p.retries++
				p.port = p.newPort()
				p.start(true)
				return
			}
			t.Fatalf("zdb %v exited early: %v\n%s", p.cmd.Args, p.cmd.ProcessState, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("zdb %v not ready on %s %s: %v\n%s", p.cmd.Args, network, addr, err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Proc) probeAddr() string {
	host := p.listen()
	switch host {
	case "::", "0.0.0.0":
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(p.port))
}

package zdb

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/zdb/client"
)

// zdbProc is a real `qsfs zdb` process started by a test.
type zdbProc struct {
	t    testing.TB
	dir  string
	args []string
	port int
	sock string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
	// retries counts restarts after losing the probed port to another process
	retries int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startZDB runs `qsfs zdb` in dir (created when empty) listening on a
// unix socket and on 127.0.0.1:<free port>, plus extra flags.
func startZDB(t testing.TB, dir string, extra ...string) *zdbProc {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := &zdbProc{t: t, dir: dir, port: freePort(t), sock: filepath.Join(dir, "zdb.sock")}
	p.args = append([]string{"zdb", "--listen", "127.0.0.1", "--port", strconv.Itoa(p.port),
		"--socket", p.sock, "--dualnet"}, extra...)
	p.start()
	return p
}

func (p *zdbProc) start() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(testbin.Path(t), p.args...)
	p.cmd.Dir = p.dir
	p.out = &lockedBuffer{}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start zdb: %v", err)
	}
	p.done = make(chan struct{})
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	out := p.out
	t.Cleanup(func() {
		// a -race build of qsfs (QSFS_BIN) reports races on its output
		if strings.Contains(out.String(), "DATA RACE") || strings.Contains(out.String(), "panic:") {
			t.Errorf("zdb reported a problem:\n%s", out)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("unix", p.sock, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			if strings.Contains(p.out.String(), "address already in use") && p.retries < 3 {
				// another process took the free port between our probe and
				// zdb's bind: pick a new one
				p.retries++
				old := strconv.Itoa(p.port)
				p.port = freePort(t)
				for i, a := range p.args {
					if a == old && i > 0 && p.args[i-1] == "--port" {
						p.args[i] = strconv.Itoa(p.port)
					}
				}
				p.start()
				return
			}
			t.Fatalf("zdb exited early: %v\n%s", p.err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("zdb not ready: %v\n%s", err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *zdbProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stop sends sig and waits for the exit status.
func (p *zdbProc) stop(sig syscall.Signal) int {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("zdb did not exit on %v\n%s", sig, p.out)
	}
	if st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if st.Signaled() {
			return 128 + int(st.Signal())
		}
		return st.ExitStatus()
	}
	return -1
}

// restart stops the process with sig (SIGKILL for a crash) and starts it
// again on the same directory and flags.
func (p *zdbProc) restart(sig syscall.Signal) {
	p.t.Helper()
	p.stop(sig)
	p.start()
}

func (p *zdbProc) dial(network string) *client.Conn {
	p.t.Helper()
	addr := p.sock
	if network == "tcp" {
		addr = "127.0.0.1:" + strconv.Itoa(p.port)
	}
	c, err := client.Dial(network, addr, 10*time.Second)
	if err != nil {
		p.t.Fatalf("dial %s: %v", network, err)
	}
	p.t.Cleanup(func() { c.Close() })
	return c
}

// do runs one command and returns the reply (error replies included).
func do(t testing.TB, c *client.Conn, args ...any) client.Reply {
	t.Helper()
	if err := c.Send(args...); err != nil {
		t.Fatalf("send %v: %v", args, err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush %v: %v", args, err)
	}
	r, err := c.Receive()
	if err != nil {
		t.Fatalf("receive %v: %v", args, err)
	}
	return r
}

func fmtReply(r client.Reply) string {
	switch r.Kind {
	case client.KindStatus:
		return "+" + string(r.Str)
	case client.KindError:
		return "-" + string(r.Str)
	case client.KindInt:
		return ":" + strconv.FormatInt(r.Int, 10)
	case client.KindBulk:
		if r.Nil {
			return "$-1"
		}
		return "$" + string(r.Str)
	case client.KindArray:
		if r.Nil {
			return "*-1"
		}
		parts := make([]string, len(r.Array))
		for i, a := range r.Array {
			parts[i] = fmtReply(a)
		}
		return "*[" + strings.Join(parts, " ") + "]"
	}
	return fmt.Sprintf("?%c", r.Kind)
}

// expect runs a command and checks the formatted reply.
func expect(t testing.TB, c *client.Conn, want string, args ...any) client.Reply {
	t.Helper()
	r := do(t, c, args...)
	if got := fmtReply(r); got != want {
		t.Fatalf("%q: got %q, want %q", fmtArgs(args), got, want)
	}
	return r
}

func fmtArgs(args []any) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = fmt.Sprint(a)
	}
	return strings.Join(parts, " ")
}

func seq(id uint64) string { return "$" + string(client.SeqKey(id)) }

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

func execZDB(t testing.TB, dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(testbin.Path(t), args...)
	cmd.Dir = dir
	return cmd
}

package zdb

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/internal/zdbproc"
	"github.com/qsfs/qsfs/zdb/client"
)

// zdbProc is a real `qsfs zdb` process started by a test (see
// internal/zdbproc), with its directory, TCP port and unix socket.
type zdbProc struct {
	*zdbproc.Proc
	t    testing.TB
	dir  string
	port int
	sock string
}

// startZDB runs `qsfs zdb` in dir (created when empty) listening on a
// unix socket and on 127.0.0.1:<free port>, plus extra flags.
func startZDB(t testing.TB, dir string, extra ...string) *zdbProc {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	sock := filepath.Join(dir, "zdb.sock")
	pr := zdbproc.Start(t, zdbproc.Options{Dir: dir, TCP: true, Socket: sock, Args: extra, CleanupKill: true})
	return &zdbProc{Proc: pr, t: t, dir: dir, port: pr.Port(), sock: sock}
}

// stop sends sig and waits for the exit status.
func (p *zdbProc) stop(sig syscall.Signal) int {
	p.t.Helper()
	return p.Signal(sig)
}

// restart stops the process with sig (SIGKILL for a crash) and starts it
// again on the same directory, port and flags.
func (p *zdbProc) restart(sig syscall.Signal) {
	p.t.Helper()
	p.Signal(sig)
	p.Restart()
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

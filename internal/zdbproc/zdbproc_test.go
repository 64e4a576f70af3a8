package zdbproc

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

func mustPing(t *testing.T, network, addr string) {
	t.Helper()
	c, err := client.Dial(network, addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	if err := c.Ping(); err != nil {
		t.Fatalf("ping %s %s: %v", network, addr, err)
	}
}

func TestStartStopRestart(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "zdb.sock")
	p := Start(t, Options{Dir: dir, TCP: true, Socket: sock, Args: []string{"--mode", "user"}})
	if p.Port() == 0 || p.Socket() != sock || p.Dir() != dir {
		t.Fatalf("port %d socket %q dir %q", p.Port(), p.Socket(), p.Dir())
	}
	mustPing(t, "tcp", p.Addr())
	mustPing(t, "unix", sock)
	if code := p.ExitCode(); code != -1 {
		t.Fatalf("exit code while running: %d", code)
	}
	port, pid := p.Port(), p.Pid()
	if code := p.Signal(syscall.SIGTERM); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit code after SIGTERM: %d\n%s", code, p.Output())
	}
	p.Restart()
	if p.Port() != port || p.Pid() == pid {
		t.Fatalf("restart: port %d (was %d), pid %d (was %d)", p.Port(), port, p.Pid(), pid)
	}
	mustPing(t, "tcp", p.Addr())
	p.Kill()
	if code := p.ExitCode(); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit code after SIGKILL: %d", code)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
	p.Restart()
	mustPing(t, "unix", sock)
	if code := p.Stop(); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit code after Stop: %d\n%s", code, p.Output())
	}
}

// TestPortLostBeforeBind hands out a port another listener holds: zdb fails
// to bind it and is started again on a new port.
func TestPortLostBeforeBind(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	orig := freePort
	t.Cleanup(func() { freePort = orig })
	calls := 0
	freePort = func() (int, error) {
		calls++
		if calls == 1 {
			return taken.Addr().(*net.TCPAddr).Port, nil
		}
		return orig()
	}
	p := Start(t, Options{TCP: true})
	if p.Port() == taken.Addr().(*net.TCPAddr).Port || p.retries != 1 || calls != 2 {
		t.Fatalf("port %d (taken %d), retries %d, probes %d", p.Port(), taken.Addr().(*net.TCPAddr).Port, p.retries, calls)
	}
	mustPing(t, "tcp", p.Addr())
}

package zstor

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/zdb/client"
	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/internal/zdbtest"
	"github.com/qsfs/qsfs/zstor/meta"
)

func writeConfig(t *testing.T, path string, cfg *config.Config) {
	t.Helper()
	b, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// zstorCLI runs `qsfs zstor -c cfg args...` and returns stdout, stderr.
func zstorCLI(t *testing.T, cfgPath string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(testbin.Path(t), append([]string{"zstor", "-c", cfgPath}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

type monitorProc struct {
	cmd  *exec.Cmd
	out  *lockedBuf
	done chan struct{}
}

type lockedBuf struct {
	ch chan struct{}
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.ch <- struct{}{}
	defer func() { <-l.ch }()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.ch <- struct{}{}
	defer func() { <-l.ch }()
	return l.b.String()
}

func startMonitor(t *testing.T, cfgPath, socket string, env ...string) *monitorProc {
	t.Helper()
	m := &monitorProc{out: &lockedBuf{ch: make(chan struct{}, 1)}, done: make(chan struct{})}
	m.cmd = exec.Command(testbin.Path(t), "zstor", "-c", cfgPath, "monitor")
	m.cmd.Env = append(os.Environ(), env...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			m.cmd.Process.Kill()
			<-m.done
		}
	})
	waitFor(t, 20*time.Second, "daemon socket", func() bool {
		c, err := net.Dial("unix", socket)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-m.done:
			t.Fatalf("monitor exited: %s", m.out.String())
		default:
		}
		return false
	})
	return m
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestDaemonCLIReloadRepair(t *testing.T) {
	cl := zdbtest.StartCluster(t, 2, 2, 1)
	dir := t.TempDir()
	cfg := cl.Config(2, 4, 0, 0)
	cfg.Socket = filepath.Join(dir, "zstor.sock")
	cfg.PidFile = filepath.Join(dir, "zstor.pid")
	cfg.PrometheusPort = uint16(freeTCPPort(t))
	cfgPath := filepath.Join(dir, "zstor.toml")
	writeConfig(t, cfgPath, cfg)

	if _, serr, err := zstorCLI(t, cfgPath, "test"); err != nil {
		t.Fatalf("zstor test: %v %s", err, serr)
	}
	// Without a daemon the CLI runs in-process.
	f1 := filepath.Join(dir, "f1")
	os.WriteFile(f1, []byte("in-process store"), 0o644)
	if _, serr, err := zstorCLI(t, cfgPath, "store", "-f", f1); err != nil {
		t.Fatalf("in-process store: %v %s", err, serr)
	}

	// A stale pid file naming another qsfs process (pid reuse) and a stale
	// socket file do not block the start.
	os.WriteFile(cfg.PidFile, []byte(fmt.Sprintf("%d\n", cl.All[0].Pid())), 0o644)
	os.WriteFile(cfg.Socket, nil, 0o644)
	m := startMonitor(t, cfgPath, cfg.Socket, "QSFS_ZSTOR_HEALTH_INTERVAL=200ms")
	if pid, err := os.ReadFile(cfg.PidFile); err != nil || strings.TrimSpace(string(pid)) != fmt.Sprint(m.cmd.Process.Pid) {
		t.Fatalf("pid file: %q %v", pid, err)
	}
	// A second daemon refuses to start.
	if _, serr, err := zstorCLI(t, cfgPath, "monitor"); err == nil || !strings.Contains(serr, "already running") {
		t.Fatalf("second monitor: %v %s", err, serr)
	}

	out, serr, err := zstorCLI(t, cfgPath, "check", "-f", f1)
	if err != nil || len(strings.TrimSpace(out)) != 32 {
		t.Fatalf("check via daemon: %q %v %s", out, err, serr)
	}
	if out, _, err := zstorCLI(t, cfgPath, "check", "-f", filepath.Join(dir, "unknown")); err != nil || out != "" {
		t.Fatalf("check unknown: %q %v", out, err)
	}
	// Non-blocking stores of a directory, with delete.
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	var files []string
	for i := 0; i < 5; i++ {
		p := filepath.Join(sub, fmt.Sprintf("file%d", i))
		os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 100000+i), 0o644)
		files = append(files, p)
	}
	if _, serr, err := zstorCLI(t, cfgPath, "store", "-n", "-s", "-f", sub); err != nil {
		t.Fatalf("store dir: %v %s", err, serr)
	}
	waitFor(t, 30*time.Second, "background uploads", func() bool {
		for _, p := range files {
			out, _, err := zstorCLI(t, cfgPath, "check", "-f", p)
			if err != nil || out == "" {
				return false
			}
		}
		return true
	})
	for i, p := range files {
		os.Remove(p)
		if _, serr, err := zstorCLI(t, cfgPath, "retrieve", "-f", p); err != nil {
			t.Fatalf("retrieve %s: %v %s", p, err, serr)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, 100000+i)) {
			t.Fatalf("%s differs", p)
		}
	}
	if _, serr, err := zstorCLI(t, cfgPath, "retrieve", "-f", filepath.Join(dir, "nothing")); err == nil || !strings.Contains(serr, "no metadata found") {
		t.Fatalf("retrieve unknown: %v %s", err, serr)
	}

	// status shows backends and the queue; metrics use the official names.
	out, serr, err = zstorCLI(t, cfgPath, "status")
	if err != nil || !strings.Contains(out, "REACHABLE") || !strings.Contains(out, cl.All[0].Addr()) || !strings.Contains(out, "daemon queue") {
		t.Fatalf("status: %v %s\n%s", err, serr, out)
	}
	waitFor(t, 10*time.Second, "metrics", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", cfg.PrometheusPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		s := string(b)
		return strings.Contains(s, `zstore_store_commands_finished{success="true"}`) &&
			strings.Contains(s, `connection_status{address="`+cl.All[0].Addr()) && strings.Contains(s, "data_size_bytes{") &&
			strings.Contains(s, `backend_type="meta"`) && strings.Contains(s, "zstor_stored_bytes_total") &&
			strings.Contains(s, "zstor_retrieved_bytes_total")
	})

	// Stop a data backend and replace it in the config; SIGUSR1 reloads and
	// the repair sweep moves its shards.
	lost := cl.All[4]
	lost.Stop()
	repl := zdbtest.Start(t)
	cfg.Groups[2] = config.Group{Backends: []config.Backend{zdbtest.DataBackend(repl)}}
	// The replacement also takes over metadata backend 3.
	cfg.Meta.Config.Backends[3] = config.Backend{Address: repl.Addr(), Namespace: config.String(zdbtest.MetaNS), Password: config.String(zdbtest.Password)}
	writeConfig(t, cfgPath, cfg)
	m.cmd.Process.Signal(syscall.SIGUSR1)
	waitFor(t, 60*time.Second, "repair and metadata rebuild after reload", func() bool {
		return strings.Contains(m.out.String(), "repair sweep done") && strings.Contains(m.out.String(), "metadata cluster rebuilt")
	})
	if n := metaEntries(t, repl.Addr()); n < len(files)+1 {
		t.Fatalf("new metadata backend has %d keys, want at least %d\n%s", n, len(files)+1, m.out.String())
	}

	// Every object's shards are now on distinct backends of the new config.
	eng, err := engine.New(cfg, logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Pool.Close()
	for _, p := range append(files, f1) {
		key, _ := eng.Meta().KeyFor(p)
		md, err := eng.Meta().Load(key)
		if err != nil || md == nil {
			t.Fatalf("metadata of %s: %v", p, err)
		}
		seen := map[string]bool{}
		for _, s := range md.Shards {
			id := meta.BackendID(s.Backend)
			if seen[id] || meta.SameBackend(s.Backend, zdbtest.DataBackend(lost)) || !eng.InConfig(cfg, s.Backend) {
				t.Fatalf("%s: shard %d on %s after repair\n%s", p, s.Index, id, m.out.String())
			}
			seen[id] = true
		}
	}
	// rebuild by metadata key and by file: nothing to do, succeeds; an
	// unknown key is an error.
	if _, serr, err := zstorCLI(t, cfgPath, "rebuild", "-f", f1); err != nil {
		t.Fatalf("rebuild -f: %v %s", err, serr)
	}
	k1, _ := eng.Meta().KeyFor(f1)
	if _, serr, err := zstorCLI(t, cfgPath, "rebuild", "-k", k1); err != nil {
		t.Fatalf("rebuild -k: %v %s", err, serr)
	}
	if _, serr, err := zstorCLI(t, cfgPath, "rebuild", "-k", "/nope/meta/00"); err == nil || !strings.Contains(serr, "no metadata found") {
		t.Fatalf("rebuild of an unknown key: %v %s", err, serr)
	}
	// With the repair done two more backends may fail.
	cl.All[2].Stop()
	cl.All[3].Stop()
	for _, p := range append(files, f1) {
		os.Remove(p)
		if _, serr, err := zstorCLI(t, cfgPath, "retrieve", "-f", p); err != nil {
			t.Fatalf("retrieve %s after repair with 2 backends down: %v %s", p, err, serr)
		}
	}

	// `test` names the stopped backends.
	if _, serr, err := zstorCLI(t, cfgPath, "test"); err == nil || !strings.Contains(serr, cl.All[2].Addr()) {
		t.Fatalf("zstor test with backends down: %v %s", err, serr)
	}
	// With 3 of 5 data backends left no 4-backend distribution exists.
	key, _ := eng.Meta().KeyFor(f1)
	if _, serr, err := zstorCLI(t, cfgPath, "rebuild", "-k", key); err == nil || !strings.Contains(serr, "distribution") {
		t.Fatalf("rebuild -k without enough backends: %v %s", err, serr)
	}

	// SIGTERM: clean exit, socket and pid file removed.
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatal("monitor did not exit on SIGTERM")
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := os.Stat(cfg.PidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind: %v", err)
	}
}

func TestCLIArgs(t *testing.T) {
	cases := []struct {
		args []string
		ok   bool
		chk  func(o *options) bool
	}{
		{[]string{"-c", "x.toml", "--log_file", "l", "-d", "store", "-f", "a", "-k", "/k", "-sdn"}, true, func(o *options) bool {
			return o.config == "x.toml" && o.debug && o.file == "a" && o.keyPath == "/k" && o.saveFailure && o.del && o.notBlocking
		}},
		{[]string{"--config=y", "store", "--file=b", "--notblocking", "--delete", "--save-failure", "--error-on-failure", "--key-path", "/q"}, true, func(o *options) bool {
			return o.config == "y" && o.file == "b" && o.notBlocking && o.del && o.saveFailure && o.eonf && o.keyPath == "/q"
		}},
		{[]string{"rebuild", "-k", "/p/meta/00"}, true, func(o *options) bool { return o.key == "/p/meta/00" }},
		{[]string{"rebuild", "-k", "x", "-f", "y"}, false, nil},
		{[]string{"rebuild"}, false, nil},
		{[]string{"retrieve"}, false, nil},
		{[]string{"store", "-f", "a", "--bogus"}, false, nil},
		{[]string{"frobnicate"}, false, nil},
		{[]string{"monitor"}, true, func(o *options) bool { return o.cmd == "monitor" && o.config == "zstor_config.toml" }},
	}
	for _, tc := range cases {
		o, err := parseArgs(tc.args)
		if (err == nil) != tc.ok {
			t.Errorf("%v: err = %v", tc.args, err)
			continue
		}
		if tc.ok && !tc.chk(o) {
			t.Errorf("%v: parsed %+v", tc.args, o)
		}
	}
}

func metaEntries(t *testing.T, addr string) int {
	t.Helper()
	c, err := client.Dial("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.NSInfo(zdbtest.MetaNS)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	fmt.Sscan(info["entries"], &n)
	return n
}

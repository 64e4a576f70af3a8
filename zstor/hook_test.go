package zstor

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/internal/zdbproc"
	"github.com/qsfs/qsfs/zdb/client"
	"github.com/qsfs/qsfs/zstor/internal/zdbtest"
)

// localZdb is the volume's own zdb, run with `--hook` = a symlink named
// "hook" to the qsfs binary, as the plugin runs it.
type localZdb struct {
	*zdbproc.Proc
}

func startLocalZdb(t *testing.T, vol, hook string, port int, env []string) *localZdb {
	t.Helper()
	p := zdbproc.Start(t, zdbproc.Options{TCP: true, Port: port, Env: env, ReadyTimeout: 60 * time.Second,
		Args: []string{"--data", filepath.Join(vol, "data"), "--index", filepath.Join(vol, "index"), "--datasize", "524288", "--hook", hook}})
	return &localZdb{p}
}

func (z *localZdb) conn(t *testing.T) *client.Conn {
	t.Helper()
	c, err := client.Dial("tcp", z.Addr(), 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dirSize(dir string) (int64, int) {
	var total int64
	n := 0
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
			n++
		}
	}
	return total, n
}

// TestHookArchiveEvictRestore drives zstor through real zdb hooks: closed
// data files are archived on rotation, evicted under a small cap, fetched
// back by missing-data on read, and after deleting all local state a new
// zdb restores the namespace through namespaces-init.
func TestHookArchiveEvictRestore(t *testing.T) {
	cl := zdbtest.StartCluster(t, 2, 2)
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	cfg := cl.Config(2, 4, 0, 0)
	cfg.Socket = filepath.Join(dir, "zstor.sock")
	cfg.PidFile = filepath.Join(dir, "zstor.pid")
	cfg.Root = vol // keys relative to the volume: restorable on another state root
	cfg.ZdbDataDirPath = filepath.Join(vol, "data", "zdbfs-data")
	cfg.MaxZdbDataDirSize = 2 // MiB
	cfgPath := filepath.Join(dir, "zstor.toml")
	writeConfig(t, cfgPath, cfg)
	m := startMonitor(t, cfgPath, cfg.Socket, "QSFS_ZSTOR_EVICT_INTERVAL=300ms")

	hook := filepath.Join(dir, "hook")
	if err := os.Symlink(testbin.Path(t), hook); err != nil {
		t.Fatal(err)
	}
	hookTmp := filepath.Join(dir, "hooktmp")
	os.Mkdir(hookTmp, 0o755)
	env := []string{"QSFS_ZSTOR_CONFIG=" + cfgPath, "QSFS_ZDB_INDEX=" + filepath.Join(vol, "index"), "QSFS_ZDB_DATA=" + filepath.Join(vol, "data"), "TMPDIR=" + hookTmp}
	port := freeTCPPort(t)
	z := startLocalZdb(t, vol, hook, port, env)
	c := z.conn(t)
	for _, cmd := range [][]any{{"NSNEW", "zdbfs-data"}, {"NSNEW", "zdbfs-temp"}, {"SELECT", "zdbfs-data"}} {
		if _, err := c.Do(cmd...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	rng := rand.New(rand.NewSource(5))
	values := map[string][]byte{}
	for i := 0; i < 120; i++ { // ~7.5 MiB over 512 KiB data files
		v := make([]byte, 64<<10)
		rng.Read(v[:32<<10])
		k := fmt.Sprintf("key-%03d", i)
		values[k] = v
		if _, err := c.Do("SET", k, v); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	dataDir := filepath.Join(vol, "data", "zdbfs-data")
	waitFor(t, 90*time.Second, "eviction under the cap", func() bool {
		size, _ := dirSize(dataDir)
		return size < 3<<20
	})
	if _, err := os.Stat(filepath.Join(dataDir, "d0")); !os.IsNotExist(err) {
		t.Fatalf("d0 not evicted: %v", err)
	}
	check := func(stage string, c *client.Conn) {
		t.Helper()
		for k, v := range values {
			got, err := c.Get([]byte(k))
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("%s: get %s: %v (%d bytes)\nzdb: %s\nzstor: %s", stage, k, err, len(got), z.Output(), m.out.String())
			}
		}
	}
	check("after eviction (missing-data retrieval)", c)
	c.Close()

	// Clean stop: namespace-closing queues the open files; wait until the
	// daemon has them.
	z.Stop()
	idx := filepath.Join(vol, "index", "zdbfs-data")
	waitFor(t, 60*time.Second, "final uploads", func() bool {
		entries, _ := os.ReadDir(idx)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "i") {
				continue
			}
			p := filepath.Join(idx, e.Name())
			out, _, err := zstorCLI(t, cfgPath, "check", "-f", p)
			if err != nil || out == "" {
				return false
			}
			local, _ := exec.Command("b2sum", "-l", "128", p).Output()
			if len(local) < 32 || strings.TrimSpace(out) != string(local[:32]) {
				return false
			}
		}
		return true
	})

	// The index copies made by jump-index are gone once uploaded.
	waitFor(t, 30*time.Second, "hook copies removed", func() bool {
		entries, _ := os.ReadDir(hookTmp)
		return len(entries) == 0
	})

	// Disaster: all local state and the daemon gone; the same config on a
	// new state root (a new host) restores it.
	m.cmd.Process.Signal(syscall.SIGTERM)
	<-m.done
	if err := os.RemoveAll(vol); err != nil {
		t.Fatal(err)
	}
	vol = filepath.Join(dir, "newroot", "vol")
	cfg.Root = vol
	cfg.ZdbDataDirPath = filepath.Join(vol, "data", "zdbfs-data")
	cfg.Socket = filepath.Join(dir, "newroot", "zstor.sock")
	cfg.PidFile = filepath.Join(dir, "newroot", "zstor.pid")
	cfgPath = filepath.Join(dir, "newroot.toml")
	writeConfig(t, cfgPath, cfg)
	m = startMonitor(t, cfgPath, cfg.Socket)
	env = []string{"QSFS_ZSTOR_CONFIG=" + cfgPath, "QSFS_ZDB_INDEX=" + filepath.Join(vol, "index"), "QSFS_ZDB_DATA=" + filepath.Join(vol, "data")}
	z2 := startLocalZdb(t, vol, hook, port, env)
	if !strings.Contains(z2.Output(), "qsfs restore:") {
		t.Errorf("no restore progress shown: %s", z2.Output())
	}
	c2 := z2.conn(t)
	defer c2.Close()
	if _, err := c2.Do("SELECT", "zdbfs-data"); err != nil {
		t.Fatalf("select after restore: %v\n%s", err, z2.Output())
	}
	z = z2
	check("after disaster restore", c2)
	if out, _, _ := zstorCLI(t, cfgPath, "check", "-f", filepath.Join(vol, "index", "zdbfs-temp", "zdb-namespace")); out != "" {
		t.Errorf("zdbfs-temp was archived")
	}
}

package zstor

import (
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/internal/zdbtest"
	"github.com/qsfs/qsfs/zstor/proto"
)

// TestHookReadyRescan: zdb rotates several data files while no upload
// happens (the hook's config is unreadable, so every store fails and no
// failure is recorded, as when a daemon dies with its queue untried). After
// a restart with a working zstor daemon, the ready hook's rescan queues every
// closed data and index file and zdb-namespace, and all end up stored with
// the local checksum.
func TestHookReadyRescan(t *testing.T) {
	cl := zdbtest.StartCluster(t, 2, 2)
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	cfg := cl.Config(2, 4, 0, 0)
	cfg.Socket = filepath.Join(dir, "zstor.sock")
	cfg.PidFile = filepath.Join(dir, "zstor.pid")
	cfg.Root = vol
	cfgPath := filepath.Join(dir, "zstor.toml")
	writeConfig(t, cfgPath, cfg)

	hook := filepath.Join(dir, "hook")
	if err := os.Symlink(testbin.Path(t), hook); err != nil {
		t.Fatal(err)
	}
	hookTmp := filepath.Join(dir, "hooktmp")
	os.Mkdir(hookTmp, 0o755)
	env := func(cfg string) []string {
		return []string{"QSFS_ZSTOR_CONFIG=" + cfg, "QSFS_ZDB_INDEX=" + filepath.Join(vol, "index"),
			"QSFS_ZDB_DATA=" + filepath.Join(vol, "data"), "TMPDIR=" + hookTmp}
	}

	// Phase 1: nothing can be stored. (A frozen daemon would block zdb,
	// which waits for jump-index; a dead one makes the hook store
	// in-process.)
	port := freeTCPPort(t)
	z := startLocalZdb(t, vol, hook, port, env(filepath.Join(dir, "absent.toml")))
	c := z.conn(t)
	for _, cmd := range [][]any{{"NSNEW", "zdbfs-data"}, {"NSNEW", "zdbfs-temp"}, {"SELECT", "zdbfs-data"}} {
		if _, err := c.Do(cmd...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	rng := rand.New(rand.NewSource(6))
	for i := 0; i < 48; i++ { // ~3 MiB over 512 KiB data files
		v := make([]byte, 64<<10)
		rng.Read(v[:32<<10])
		if _, err := c.Do("SET", fmt.Sprintf("key-%03d", i), v); err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
		if i%16 == 0 { // touch an older entry: dirty index files
			if _, err := c.Do("DEL", fmt.Sprintf("key-%03d", i/2)); err != nil {
				t.Fatalf("del: %v", err)
			}
		}
	}
	c.Close()
	z.Stop()

	dataDir := filepath.Join(vol, "data", "zdbfs-data")
	idxDir := filepath.Join(vol, "index", "zdbfs-data")
	closed := func() []string {
		out := []string{filepath.Join(idxDir, "zdb-namespace")}
		for _, d := range []struct{ dir, prefix string }{{dataDir, "d"}, {idxDir, "i"}} {
			names, err := closedFiles(d.dir, d.prefix)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				out = append(out, filepath.Join(d.dir, n))
			}
		}
		return out
	}
	files := closed()
	if len(files) < 1+2*3 {
		t.Fatalf("want at least 3 closed data and index files, got %v", files)
	}
	// Nothing stored yet (in-process check: no daemon runs).
	if out, serr, err := zstorCLI(t, cfgPath, "check", "-f", files[1]); err != nil || out != "" {
		t.Fatalf("%s stored before the rescan: %q %v %s", files[1], out, err, serr)
	}

	// Phase 2: a daemon, and zdb with the real config.
	m := startMonitor(t, cfgPath, cfg.Socket)
	z = startLocalZdb(t, vol, hook, port, env(cfgPath))
	stored := func(p string) bool {
		out, _, err := zstorCLI(t, cfgPath, "check", "-f", p)
		if err != nil || out == "" {
			return false
		}
		local, err := engine.FileChecksum(p)
		return err == nil && strings.TrimSpace(out) == hex.EncodeToString(local[:])
	}
	pending := files
	defer func() {
		if t.Failed() {
			t.Logf("not stored: %v\nzdb: %s\nzstor: %s", pending, z.Output(), m.out.String())
		}
	}()
	waitFor(t, 120*time.Second, "closed files stored after ready", func() bool {
		var left []string
		for _, p := range pending {
			if !stored(p) {
				left = append(left, p)
			}
		}
		pending = left
		if len(left) > 0 {
			time.Sleep(300 * time.Millisecond)
			select {
			case <-m.done:
				t.Fatalf("daemon exited: %s", m.out.String())
			default:
			}
			return false
		}
		return true
	})
	// The index copies are removed once uploaded, and zdbfs-temp is never
	// archived.
	waitFor(t, 30*time.Second, "hook copies removed", func() bool {
		entries, _ := os.ReadDir(hookTmp)
		return len(entries) == 0
	})
	if out, _, _ := zstorCLI(t, cfgPath, "check", "-f", filepath.Join(vol, "index", "zdbfs-temp", "zdb-namespace")); out != "" {
		t.Errorf("zdbfs-temp was archived")
	}
	t.Logf("%d closed files stored after ready", len(files))
}

// TestClosedFiles: every prefix<N> regular file but the highest N, in
// numeric order; other names and directories are ignored.
func TestClosedFiles(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"d0", "d1", "d10", "d2", "dx", "i0", "zdb-namespace"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "d11"), 0o755)
	got, err := closedFiles(dir, "d")
	if err != nil || strings.Join(got, ",") != "d0,d1,d2" {
		t.Errorf("closedFiles d: %v %v, want d0,d1,d2", got, err)
	}
	if got, err := closedFiles(dir, "i"); err != nil || len(got) != 0 {
		t.Errorf("closedFiles i (only the current one): %v %v", got, err)
	}
	if got, err := closedFiles(filepath.Join(dir, "absent"), "d"); err != nil || len(got) != 0 {
		t.Errorf("closedFiles of a missing dir: %v %v", got, err)
	}
}

// TestRescanStoresEveryIndexCopy: the rescan queues a copy of every closed
// index file even when each store finishes (and deletes its copy) before
// the rescan makes the next request. The daemon removes the copy dir with
// its last copy, so a rescan that copied one file after another lost every
// index file after the first store (TestHookReadyRescan failed that way
// when the daemon won the race). Both paths: in-process stores, and a
// daemon that stores before it answers.
func TestRescanStoresEveryIndexCopy(t *testing.T) {
	cl := zdbtest.StartCluster(t, 2, 2)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	log := logrus.NewEntry(quiet)
	for _, viaDaemon := range []bool{false, true} {
		t.Run(fmt.Sprintf("daemon=%v", viaDaemon), func(t *testing.T) {
			dir := t.TempDir()
			vol := filepath.Join(dir, "vol")
			cfg := cl.Config(2, 4, 0, 0)
			cfg.Root = vol
			eng, err := engine.New(cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(eng.Pool.Close)
			if viaDaemon {
				cfg.Socket = filepath.Join(dir, "zstor.sock")
				serveSynchronously(t, cfg.Socket, eng, log)
			}
			idxDir := filepath.Join(vol, "index", "zdbfs-data")
			dataDir := filepath.Join(vol, "data", "zdbfs-data")
			var closed []string
			write := func(p string, closedFile bool) {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(p+strings.Repeat(" contents", 100)), 0o600); err != nil {
					t.Fatal(err)
				}
				if closedFile {
					closed = append(closed, p)
				}
			}
			write(filepath.Join(idxDir, "zdb-namespace"), true)
			for i := 0; i < 4; i++ {
				write(filepath.Join(idxDir, fmt.Sprintf("i%d", i)), i < 3)
				write(filepath.Join(dataDir, fmt.Sprintf("d%d", i)), i < 3)
			}
			hookTmp := filepath.Join(dir, "hooktmp")
			if err := os.Mkdir(hookTmp, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Setenv("TMPDIR", hookTmp)

			h := &hookEnv{cfg: cfg, indexDir: filepath.Join(vol, "index"), dataDir: filepath.Join(vol, "data"), log: log}
			if err := h.rescan(); err != nil {
				t.Fatalf("rescan: %v", err)
			}
			var missing []string
			for _, p := range closed {
				local, err := engine.FileChecksum(p)
				if err != nil {
					t.Fatal(err)
				}
				sum, err := eng.Check(p)
				if err != nil {
					t.Fatalf("check %s: %v", p, err)
				}
				if sum == nil || *sum != local {
					missing = append(missing, filepath.Base(p))
				}
			}
			if len(missing) > 0 {
				t.Errorf("closed files not stored with their checksum after the rescan: %v", missing)
			}
			for _, p := range []string{filepath.Join(idxDir, "i3"), filepath.Join(dataDir, "d3")} {
				if sum, err := eng.Check(p); err != nil || sum != nil {
					t.Errorf("current file %s stored by the rescan (or check failed: %v)", p, err)
				}
			}
			if entries, _ := os.ReadDir(hookTmp); len(entries) != 0 {
				t.Errorf("index copies left in %s: %v", hookTmp, entries)
			}
		})
	}
}

// serveSynchronously answers daemon commands on socket, running each one,
// background stores included, before it answers: a daemon whose workers
// always win the race with the client.
func serveSynchronously(t *testing.T, socket string, eng *engine.Engine, log *logrus.Entry) {
	t.Helper()
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					b, err := proto.ReadFrame(c)
					if err != nil {
						return
					}
					cmd, err := proto.UnmarshalCommand(b)
					resp := &proto.Response{Kind: proto.Err}
					if err != nil {
						resp.Err = err.Error()
					} else {
						resp = execute(eng, cmd, log)
					}
					if proto.WriteFrame(c, resp.Marshal()) != nil {
						return
					}
				}
			}()
		}
	}()
}

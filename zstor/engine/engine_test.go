package engine

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/internal/zdbtest"
	"github.com/qsfs/qsfs/zstor/meta"
)

func testLog() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return logrus.NewEntry(l)
}

// testData is half random, half repeating, so compression does some work.
func testData(n int, seed int64) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewSource(seed))
	rng.Read(b[:n/2])
	for i := n / 2; i < n; i++ {
		b[i] = byte(i % 7)
	}
	return b
}

func newEngine(t *testing.T, cfg *config.Config) *Engine {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := New(cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Pool.Close)
	return e
}

func TestRoundTripLoseBackendsRebuild(t *testing.T) {
	cl := zdbtest.StartCluster(t, 2, 2, 2, 1) // 4 groups, 7 backends
	cfg := cl.Config(4, 6, 0, 0)
	e := newEngine(t, cfg)
	dir := t.TempDir()
	sizes := map[string]int{"empty": 0, "one": 1, "2m-1": 2<<20 - 1, "2m": 2 << 20, "2m+1": 2<<20 + 1, "64m": 64 << 20}
	want := map[string][]byte{}
	i := int64(0)
	for name, n := range sizes {
		i++
		data := testData(n, i)
		want[name] = data
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := e.Store(p, "")
		if err != nil {
			t.Fatalf("store %s: %v", name, err)
		}
		if res.Skipped || res.Size != int64(n) {
			t.Fatalf("store %s: %+v", name, res)
		}
		again, err := e.Store(p, "")
		if err != nil || !again.Skipped {
			t.Fatalf("second store of unchanged %s not skipped: %+v %v", name, again, err)
		}
		sum, err := e.Check(p)
		if err != nil || sum == nil || *sum != res.Checksum {
			t.Fatalf("check %s: %v %v", name, sum, err)
		}
	}
	if sum, err := e.Check(filepath.Join(dir, "never-stored")); err != nil || sum != nil {
		t.Fatalf("check of unknown file: %v %v", sum, err)
	}
	if _, err := e.Retrieve(filepath.Join(dir, "never-stored")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("retrieve unknown: %v", err)
	}

	verifyAll := func(stage string) {
		t.Helper()
		for name, data := range want {
			p := filepath.Join(dir, name)
			os.Remove(p)
			if _, err := e.Retrieve(p); err != nil {
				t.Fatalf("%s: retrieve %s: %v", stage, name, err)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %s differs after retrieve (%d vs %d bytes)", stage, name, len(got), len(data))
			}
		}
	}
	verifyAll("all up")

	// Lose expected - minimal = 2 backends (data-only ones: metadata
	// writes need all 4 metadata backends, as in the official zstor).
	cl.All[4].Stop()
	cl.All[6].Stop()
	e.Pool.Close()
	verifyAll("two backends down")

	// Replace backend 6 with a new one and rebuild every object.
	repl := zdbtest.Start(t)
	cfg2 := *cfg
	cfg2.Groups = append([]config.Group(nil), cfg.Groups...)
	cfg2.Groups[3] = config.Group{Backends: []config.Backend{zdbtest.DataBackend(repl)}}
	if err := e.Reload(&cfg2); err != nil {
		t.Fatal(err)
	}
	down := map[string]bool{meta.BackendID(zdbtest.DataBackend(cl.All[4])): true}
	e.Health = fakeHealth(down)
	for name := range want {
		if err := e.Rebuild(filepath.Join(dir, name), "", nil); err != nil {
			t.Fatalf("rebuild %s: %v", name, err)
		}
		key, _ := e.Meta().KeyFor(filepath.Join(dir, name))
		md, err := e.Meta().Load(key)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range md.Shards {
			if down[meta.BackendID(s.Backend)] || meta.SameBackend(s.Backend, zdbtest.DataBackend(cl.All[6])) {
				t.Fatalf("%s: shard %d still on lost backend %s", name, s.Index, s.Backend.Address)
			}
		}
	}
	if n, err := repl.Entries(); err != nil || n == 0 {
		t.Fatalf("replacement backend got no shards: %d %v", n, err)
	}
	// Full redundancy again: two more backends may go (one also serves
	// metadata; reads need only 2 of 4).
	cl.All[3].Stop()
	cl.All[5].Stop()
	e.Pool.Close()
	e.Health = nil
	verifyAll("after rebuild, two other backends down")
}

type fakeHealth map[string]bool

func (f fakeHealth) Writable(b config.Backend) bool { return !f[meta.BackendID(b)] }
func (f fakeHealth) Readable(b config.Backend) bool { return !f[meta.BackendID(b)] }
func (f fakeHealth) Healthy(b config.Backend) bool  { return !f[meta.BackendID(b)] }

func TestStoreSkipsUnreachableBackend(t *testing.T) {
	cl := zdbtest.StartCluster(t, 3, 2)
	cfg := cl.Config(2, 4, 0, 0)
	e := newEngine(t, cfg)
	cl.All[4].Stop() // a data backend that is down: placement must go around it
	p := filepath.Join(t.TempDir(), "f")
	data := testData(300000, 9)
	os.WriteFile(p, data, 0o644)
	for i := 0; i < 5; i++ { // random placement: hit the dead one at least sometimes
		os.WriteFile(p, append(data, byte(i)), 0o644)
		if _, err := e.Store(p, ""); err != nil {
			t.Fatalf("store with one backend down: %v", err)
		}
	}
	os.Remove(p)
	if _, err := e.Retrieve(p); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, append(data, 4)) {
		t.Fatal("content differs")
	}
}

// TestPooledConnectionsAfterBackendRestart: with no parity (4+0), every
// shard needs its backend, so idle pooled connections that a restarted
// backend dropped must be replaced transparently.
func TestPooledConnectionsAfterBackendRestart(t *testing.T) {
	cl := zdbtest.StartCluster(t, 4)
	e := newEngine(t, cl.Config(4, 4, 0, 0))
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, testData(3<<20, 1), 0o644)
	os.WriteFile(b, testData(1<<20, 2), 0o644)
	if _, err := e.Store(a, ""); err != nil {
		t.Fatal(err)
	}
	for _, z := range cl.All {
		z.Stop()
		z.Start()
	}
	os.Remove(a)
	if _, err := e.Retrieve(a); err != nil {
		t.Fatalf("retrieve over stale pooled connections: %v", err)
	}
	if got, _ := os.ReadFile(a); !bytes.Equal(got, testData(3<<20, 1)) {
		t.Fatal("content differs")
	}
	for _, z := range cl.All {
		z.Stop()
		z.Start()
	}
	if _, err := e.Store(b, ""); err != nil {
		t.Fatalf("store over stale pooled connections: %v", err)
	}
}

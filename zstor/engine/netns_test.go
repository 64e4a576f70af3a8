package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qsfs/qsfs/zstor/internal/zdbtest"
	"github.com/qsfs/qsfs/zstor/meta"
)

// TestNetnsGroupLoss runs backends in three network namespaces (one per
// group, IPv6 addresses) and cuts a whole group off: with
// redundant_groups = 1 every object still retrieves.
func TestNetnsGroupLoss(t *testing.T) {
	zdbtest.NeedNetns(t)
	groups := []*zdbtest.NetGroup{
		zdbtest.StartNetGroup(t, 0, 2),
		zdbtest.StartNetGroup(t, 1, 2),
		zdbtest.StartNetGroup(t, 2, 2),
	}
	cl := zdbtest.NetCluster(groups...)
	cfg := cl.Config(2, 4, 1, 0)
	e := newEngine(t, cfg)
	dir := t.TempDir()
	want := map[string][]byte{}
	for i, n := range []int{0, 1, 3 << 20, 5<<20 + 3} {
		name := fmt.Sprintf("f%d", i)
		want[name] = testData(n, int64(i+100))
		p := filepath.Join(dir, name)
		os.WriteFile(p, want[name], 0o644)
		if _, err := e.Store(p, ""); err != nil {
			t.Fatalf("store %s: %v", name, err)
		}
	}
	// Every object must survive the loss of any one group; cut each in turn.
	for gi, g := range groups {
		g.SetLink(t, false)
		e.Pool.Close()
		down := fakeHealth{}
		for _, z := range g.Backends {
			down[meta.BackendID(zdbtest.DataBackend(z))] = true
		}
		e.Health = down // as the daemon's monitor would report
		for name, data := range want {
			p := filepath.Join(dir, name)
			os.Remove(p)
			if _, err := e.Retrieve(p); err != nil {
				t.Fatalf("group %d down: retrieve %s: %v", gi, name, err)
			}
			if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
				t.Fatalf("group %d down: %s differs", gi, name)
			}
		}
		g.SetLink(t, true)
	}
}

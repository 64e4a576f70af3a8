package reaper_test

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qsfs/qsfs/driver/reaper"
	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/netns"
	"github.com/qsfs/qsfs/netns/nstest"
)

// TestReaperRealCounters runs the reaper on a real volume namespace whose
// upload counter is read from its tagged iptables rules: it survives a round
// while it uploads, a restarted reaper then tears it down once it is quiet,
// and a volume whose counters cannot be read is torn down at the threshold.
func TestReaperRealCounters(t *testing.T) {
	nstest.RequireRoot(t)
	bin := testbin.Path(t)
	backend := nstest.NewPeer(t, 5)
	nstest.Serve(t, bin, backend.NS, 9900)

	id, missing := nstest.VolumeID(20), nstest.VolumeID(21)
	t.Cleanup(func() {
		for _, v := range []string{id, missing} {
			if err := netns.Teardown(v); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	ns, err := netns.Setup(netns.Config{ID: id, Backends: []netip.AddrPort{netip.AddrPortFrom(backend.Addr4, 9900)}})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	var torn []string
	newReaper := func() *reaper.Reaper {
		store, err := reaper.OpenTombstones(dir)
		if err != nil {
			t.Fatal(err)
		}
		r, err := reaper.New(reaper.Config{
			Tombstones: store, Counters: netns.ReadCounters,
			Teardown: func(ctx context.Context, v string) error {
				torn = append(torn, v)
				return netns.Teardown(v)
			},
			CheckPeriod: 3 * time.Second, UploadLimit: 64 << 10, FailureThreshold: 2,
			Now: func() time.Time { return now },
		})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	round := func(r *reaper.Reaper) map[string]reaper.Decision {
		t.Helper()
		now = now.Add(3 * time.Second)
		res, err := r.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]reaper.Decision{}
		for _, x := range res {
			out[x.ID] = x.Decision
			t.Logf("%s: %s sent=%d err=%v", x.ID, x.Decision, x.Sent, x.Err)
		}
		return out
	}

	r := newReaper()
	if err := r.Add("busy", id); err != nil {
		t.Fatal(err)
	}
	if err := r.Add("broken", missing); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 256<<10)
	if out, err := nstest.RedisStdin(bin, ns.Name, 30*time.Second, payload, backend.Addr4, 9900, "-x", "SET", "k"); err != nil || out != "k" {
		t.Fatalf("upload: %q %v", out, err)
	}
	if d := round(r); d[id] != reaper.Uploading || d[missing] != reaper.ReadFailed {
		t.Fatalf("round 1: %v", d)
	}

	// Restart, then a quiet period.
	r = newReaper()
	if d := round(r); d[id] != reaper.TornDownIdle || d[missing] != reaper.TornDownFailed {
		t.Fatalf("round 2: %v", d)
	}
	if len(torn) != 2 {
		t.Fatalf("torn down %v", torn)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", netns.Name(id))); !os.IsNotExist(err) {
		t.Fatalf("namespace of %s left after teardown: %v", id, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("files left in tombstone dir: %v", left)
	}
}

package reaper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/qsfs/qsfs/netns"
)

// fakeVolumes stands in for the plugin: per-volume upload counters (or a read
// error) and a record of teardowns.
type fakeVolumes struct {
	mu      sync.Mutex
	tx      map[string]uint64
	broken  map[string]bool
	torn    []string
	failOne map[string]bool // teardown fails once
}

func newFake() *fakeVolumes {
	return &fakeVolumes{tx: map[string]uint64{}, broken: map[string]bool{}, failOne: map[string]bool{}}
}

func (f *fakeVolumes) counters(id string) (netns.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken[id] {
		return netns.Counters{}, errors.New("no such namespace")
	}
	return netns.Counters{TxBytes: f.tx[id], TxPackets: f.tx[id] / 1000}, nil
}

func (f *fakeVolumes) teardown(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOne[id] {
		delete(f.failOne, id)
		return errors.New("umount: device busy")
	}
	f.torn = append(f.torn, id)
	return nil
}

func (f *fakeVolumes) send(id string, n uint64) {
	f.mu.Lock()
	f.tx[id] += n
	f.mu.Unlock()
}

func (f *fakeVolumes) tornDown() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.torn...)
}

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

const (
	period = 2 * time.Second
	limit  = 1000
)

func newReaper(t *testing.T, dir string, f *fakeVolumes, c *clock) *Reaper {
	t.Helper()
	store, err := OpenTombstones(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Tombstones: store, Counters: f.counters, Teardown: f.teardown,
		CheckPeriod: period, UploadLimit: limit, FailureThreshold: 3, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decisions(t *testing.T, r *Reaper) map[string]Decision {
	t.Helper()
	res, err := r.RunOnce(context.Background())
	if err != nil {
		t.Fatalf("round: %v", err)
	}
	out := map[string]Decision{}
	for _, x := range res {
		out[x.ID] = x.Decision
	}
	return out
}

const (
	busy  = "00000000000000b1"
	quiet = "00000000000000a1"
	gone  = "00000000000000c1"
)

func TestReaperRounds(t *testing.T) {
	dir := t.TempDir()
	f, c := newFake(), &clock{t: time.Unix(1_700_000_000, 0)}
	r := newReaper(t, dir, f, c)
	for _, id := range []string{busy, quiet} {
		if err := r.Add("vol-"+id, id); err != nil {
			t.Fatal(err)
		}
	}
	f.broken[gone] = true
	if err := r.cfg.Tombstones.Put(Tombstone{Name: "gone", ID: gone, Time: c.now()}); err != nil {
		t.Fatal(err)
	}

	// Round 1, too early for the sampled ones; the unsampled one fails a read.
	got := decisions(t, r)
	want := map[string]Decision{busy: NotDue, quiet: NotDue, gone: ReadFailed}
	assertDecisions(t, got, want)

	// Round 2 after a period: busy sent the limit, quiet sent less.
	c.advance(period)
	f.send(busy, limit)
	f.send(quiet, limit-1)
	got = decisions(t, r)
	assertDecisions(t, got, map[string]Decision{busy: Uploading, quiet: TornDownIdle, gone: ReadFailed})
	if torn := f.tornDown(); len(torn) != 1 || torn[0] != quiet {
		t.Fatalf("torn down %v, want [%s]", torn, quiet)
	}
	if r.cfg.Tombstones.Has(quiet) {
		t.Fatalf("tombstone of %s left after teardown", quiet)
	}

	// Restart: a second reaper on the same directory continues the state:
	// busy's sample and gone's two failures.
	r2 := newReaper(t, dir, f, c)
	c.advance(period)
	f.send(busy, 2*limit)
	got = decisions(t, r2)
	assertDecisions(t, got, map[string]Decision{busy: Uploading, gone: TornDownFailed})

	c.advance(period)
	got = decisions(t, r2)
	assertDecisions(t, got, map[string]Decision{busy: TornDownIdle})
	if torn := f.tornDown(); len(torn) != 3 {
		t.Fatalf("torn down %v, want 3 volumes", torn)
	}
	if left, err := r2.cfg.Tombstones.List(); err != nil || len(left) != 0 {
		t.Fatalf("tombstones left: %v %v", left, err)
	}
	if v := counterValue(t, r2, TornDownIdle); v != 1 {
		t.Fatalf("torn_down_idle metric of second reaper = %v, want 1", v)
	}
	if v := counterValue(t, r, ReadFailed); v != 2 {
		t.Fatalf("read_failed metric of first reaper = %v, want 2", v)
	}
}

func TestReaperRetriesFailedTeardown(t *testing.T) {
	dir := t.TempDir()
	f, c := newFake(), &clock{t: time.Unix(1_700_000_000, 0)}
	r := newReaper(t, dir, f, c)
	if err := r.Add("q", quiet); err != nil {
		t.Fatal(err)
	}
	f.failOne[quiet] = true
	c.advance(period)
	assertDecisions(t, decisions(t, r), map[string]Decision{quiet: TeardownFailed})
	ts, err := r.cfg.Tombstones.Get(quiet)
	if err != nil || !ts.Reaping || ts.Reason != reasonIdle {
		t.Fatalf("tombstone after failed teardown: %+v %v", ts, err)
	}
	// Even with new uploads and after a restart, the decision stands.
	f.send(quiet, 10*limit)
	r2 := newReaper(t, dir, f, c)
	assertDecisions(t, decisions(t, r2), map[string]Decision{quiet: TornDownIdle})
}

func TestReaperCounterReset(t *testing.T) {
	f, c := newFake(), &clock{t: time.Unix(1_700_000_000, 0)}
	r := newReaper(t, t.TempDir(), f, c)
	f.send(busy, 5*limit)
	if err := r.Add("b", busy); err != nil {
		t.Fatal(err)
	}
	// The namespace was re-created: its counter restarts below the sample.
	f.tx[busy] = 2 * limit
	c.advance(period)
	assertDecisions(t, decisions(t, r), map[string]Decision{busy: Uploading})
}

func TestReaperRun(t *testing.T) {
	f := newFake()
	store, err := OpenTombstones(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	r, err := New(Config{Tombstones: store, Counters: f.counters, CheckPeriod: 500 * time.Millisecond,
		UploadLimit: limit, Teardown: func(ctx context.Context, id string) error {
			done <- id
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add("q", quiet); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { r.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	select {
	case id := <-done:
		if id != quiet {
			t.Fatalf("tore down %s, want %s", id, quiet)
		}
	case <-time.After(time.Minute):
		t.Fatal("quiet volume not torn down by Run")
	}
}

func TestTombstoneStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tombstones")
	s, err := OpenTombstones(dir)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := Tombstone{Name: "data", ID: "0123456789abcdef", Time: at, Sampled: true, LastTx: 42, SampleTime: at, Failures: 2}
	if err := s.Put(want); err != nil {
		t.Fatal(err)
	}
	// A temp file left by a crash is ignored.
	if err := os.WriteFile(filepath.Join(dir, ".0123456789abcdef.json.tmp-1"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "0123456789abcdef.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("tombstone file: %v %v", st, err)
	}
	s2, _ := OpenTombstones(dir)
	got, err := s2.Get(want.ID)
	if err != nil || got != want {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, want)
	}
	list, err := s2.List()
	if err != nil || len(list) != 1 || list[0] != want {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if err := s2.Delete(want.ID); err != nil {
		t.Fatal(err)
	}
	if err := s2.Delete(want.ID); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := s2.Get(want.ID); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := s2.Put(Tombstone{ID: "../x"}); err == nil {
		t.Fatal("Put accepted a bad id")
	}
}

func assertDecisions(t *testing.T, got, want map[string]Decision) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("decisions %v, want %v", got, want)
	}
	for id, d := range want {
		if got[id] != d {
			t.Fatalf("decision for %s = %q, want %q (all: %v)", id, got[id], d, got)
		}
	}
}

// counterValue returns the reaper's decision counter for d.
func counterValue(t *testing.T, r *Reaper, d Decision) float64 {
	t.Helper()
	var m dto.Metric
	if err := r.decisions.WithLabelValues(string(d)).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/driver/reaper"
)

// ReaperConfig are the reaper's three numbers (zero = the reaper's defaults).
type ReaperConfig struct {
	CheckPeriod      time.Duration
	UploadLimit      uint64
	FailureThreshold int
}

// Graveyard holds removed volumes until they are torn down: it writes the
// tombstone (package reaper), keeps the stacks of tombstoned volumes that
// still upload, and tears them down when the reaper decides so. Volumes
// whose stack is not running are torn down at once, in the background.
type Graveyard interface {
	Bury(rec *Record, st *Stack) error
	Restore()
	Shutdown(timeout time.Duration)
	IsBuried(name string) (string, bool)
}

type graveyard struct {
	d      *Driver
	stones *reaper.Tombstones
	reaper *reaper.Reaper
	log    *logrus.Entry

	mu     sync.Mutex
	stacks map[string]*Stack // id -> stack of a tombstoned volume still uploading
	idle   map[string]uint64 // id -> tx sample of an unmounted, idle volume
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newGraveyard(d *Driver) *graveyard {
	g := &graveyard{d: d, log: d.log.WithField("component", "graveyard"),
		stacks: map[string]*Stack{}, idle: map[string]uint64{}}
	stones, err := reaper.OpenTombstones(d.store.TombstoneDir())
	if err != nil {
		g.log.WithError(err).Error("tombstones unavailable")
		return g
	}
	g.stones = stones
	r, err := reaper.New(reaper.Config{
		Tombstones:       stones,
		Counters:         d.iso.Counters,
		Teardown:         g.teardown,
		CheckPeriod:      d.cfg.Reaper.CheckPeriod,
		UploadLimit:      d.cfg.Reaper.UploadLimit,
		FailureThreshold: d.cfg.Reaper.FailureThreshold,
		Log:              d.log.WithField("component", "reaper"),
	})
	if err != nil {
		g.log.WithError(err).Error("reaper unavailable")
		return g
	}
	g.reaper = r
	return g
}

// Collector returns the reaper's metrics (nil without a reaper).
func (g *graveyard) Collector() prometheus.Collector {
	if g.reaper == nil {
		return nil
	}
	return g.reaper
}

// Bury writes the tombstone of rec. A stack whose zstor still runs stays
// up for the reaper; anything else is torn down at once in the background.
func (g *graveyard) Bury(rec *Record, st *Stack) error {
	if g.reaper == nil {
		return fmt.Errorf("volume %s: tombstone store is unavailable", rec.Name)
	}
	if err := g.reaper.Add(rec.Name, rec.ID); err != nil {
		return fmt.Errorf("volume %s: write tombstone: %w", rec.Name, err)
	}
	g.mu.Lock()
	delete(g.idle, rec.ID)
	keep := st != nil && st.ZstorRunning() && g.d.iso.Enabled()
	if keep {
		g.stacks[rec.ID] = st
	}
	g.mu.Unlock()
	if keep {
		g.log.WithFields(logrus.Fields{"volume": rec.Name, "id": rec.ID}).Info("tombstoned; reaper waits for uploads to go quiet")
		return nil
	}
	g.mu.Lock()
	if st != nil {
		g.stacks[rec.ID] = st
	}
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := g.teardown(context.Background(), rec.ID); err != nil {
			g.log.WithError(err).WithField("volume", rec.Name).Warn("teardown failed; the reaper retries")
			return
		}
		_ = g.stones.Delete(rec.ID)
	}()
	return nil
}

// teardown stops what runs of volume id, removes its network and its local
// data, and deletes the tombstone.
func (g *graveyard) teardown(_ context.Context, id string) error {
	g.mu.Lock()
	st := g.stacks[id]
	g.mu.Unlock()
	var errs []error
	if st != nil {
		errs = append(errs, st.stopFS(), st.stopBase(g.d.cfg.DrainTimeout, true))
	} else if err := g.d.iso.Teardown(id); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(g.d.store.DataDir(id)); err != nil {
		errs = append(errs, fmt.Errorf("remove data of volume %s: %w", id, err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	g.mu.Lock()
	delete(g.stacks, id)
	g.mu.Unlock()
	g.log.WithField("id", id).Info("volume torn down")
	return g.stones.Delete(id)
}

// IsBuried reports whether a volume called name waits in the graveyard,
// with its id.
func (g *graveyard) IsBuried(name string) (string, bool) {
	if g.stones == nil {
		return "", false
	}
	ts, err := g.stones.List()
	if err != nil {
		return "", false
	}
	for _, t := range ts {
		if t.Name == name {
			return t.ID, true
		}
	}
	return "", false
}

// Restore starts the reaper and the idle watch.
func (g *graveyard) Restore() {
	if g.reaper == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.reaper.Run(ctx)
	}()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.watchIdle(ctx)
	}()
}

// watchIdle stops the network and zstor of unmounted volumes once their
// uploads are quiet (less than the upload limit per check period), so idle
// volumes cost nothing.
func (g *graveyard) watchIdle(ctx context.Context) {
	period := g.d.cfg.Reaper.CheckPeriod
	if period <= 0 {
		period = reaper.DefaultCheckPeriod
	}
	limit := g.d.cfg.Reaper.UploadLimit
	if limit == 0 {
		limit = reaper.DefaultUploadLimit
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		g.d.mu.Lock()
		var vs []*vol
		for _, v := range g.d.vols {
			vs = append(vs, v)
		}
		g.d.mu.Unlock()
		for _, v := range vs {
			r, state, _, st := v.snapshot()
			if !idleBase(state, st) {
				g.mu.Lock()
				delete(g.idle, r.ID)
				g.mu.Unlock()
				continue
			}
			// First sight: take a sample. Later: quiet when less than the
			// limit went out since, or when the counters cannot be read (a
			// volume without backends has none).
			c, err := g.d.iso.Counters(r.ID)
			g.mu.Lock()
			last, sampled := g.idle[r.ID]
			g.idle[r.ID] = c.TxBytes
			g.mu.Unlock()
			if !sampled || (err == nil && c.TxBytes >= last && c.TxBytes-last >= limit) {
				continue
			}
			if !v.op.TryLock() {
				continue
			}
			if _, state, _, st := v.snapshot(); idleBase(state, st) {
				g.log.WithField("volume", r.Name).Info("uploads quiet; stopping the idle stack")
				if err := g.d.stopStack(v, true); err != nil {
					g.log.WithError(err).WithField("volume", r.Name).Warn("stop idle stack")
				}
			}
			v.op.Unlock()
			g.mu.Lock()
			delete(g.idle, r.ID)
			g.mu.Unlock()
		}
	}
}

// Shutdown stops the reaper and the zstor of tombstoned volumes; their
// networks and tombstones stay for the next start.
func (g *graveyard) Shutdown(timeout time.Duration) {
	if g.cancel != nil {
		g.cancel()
	}
	g.mu.Lock()
	stacks := g.stacks
	g.stacks = map[string]*Stack{}
	g.mu.Unlock()
	for _, st := range stacks {
		_ = st.stopFSWithin(timeout / 2)
		_ = st.stopBase(timeout, false)
	}
}

// idleBase reports whether a volume's network (and zstor) runs without a
// mount: after the last unmount, or after a failed Mount of an idle volume.
func idleBase(state string, st *Stack) bool {
	return st != nil && (state == StateIdle || state == StateFailed)
}

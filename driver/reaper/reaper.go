package reaper

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/netns"
)

// Defaults, as ZOS's qsfsd cleanup: look every 10 minutes, tear down below
// 100 MiB uploaded since the last look or after 10 failed reads in a row.
const (
	DefaultCheckPeriod      = 10 * time.Minute
	DefaultUploadLimit      = 100 << 20
	DefaultFailureThreshold = 10
)

// Decision is what a round decided for one tombstoned volume.
type Decision string

// Decisions, also the values of the `decision` metric label.
const (
	Sampled        Decision = "sampled"              // first sample taken, waiting
	Uploading      Decision = "uploading"            // at least UploadLimit sent since the last sample, waiting
	ReadFailed     Decision = "read_failed"          // counters unreadable, failure count below threshold
	NotDue         Decision = "not_due"              // last sample younger than the check period
	TornDownIdle   Decision = "torn_down_idle"       // less than UploadLimit sent: torn down
	TornDownFailed Decision = "torn_down_unreadable" // FailureThreshold failed reads: torn down
	TeardownFailed Decision = "teardown_failed"      // teardown decided but failed; retried next round
)

// Reasons stored in Tombstone.Reason once teardown is decided.
const (
	reasonIdle       = "idle"
	reasonUnreadable = "unreadable"
)

// Config configures a Reaper. Tombstones, Counters and Teardown are
// required; zero values of the others mean the defaults.
type Config struct {
	Tombstones *Tombstones
	// Counters reads a volume's counters (netns.ReadCounters).
	Counters func(id string) (netns.Counters, error)
	// Teardown removes everything of a volume: unmount, stop processes,
	// netns.Teardown, local data. The reaper deletes the tombstone after it
	// succeeds (Teardown may do so too).
	Teardown         func(ctx context.Context, id string) error
	CheckPeriod      time.Duration
	UploadLimit      uint64
	FailureThreshold int
	// Now returns the time (tests); default time.Now.
	Now func() time.Time
	// Log receives decisions; default the logrus standard logger.
	Log logrus.FieldLogger
}

// Result is the outcome of a round for one volume.
type Result struct {
	ID, Name string
	Decision Decision
	Sent     uint64 // bytes uploaded since the previous sample (when sampled)
	Err      error  // read or teardown error, if any
}

// Reaper tears down tombstoned volumes whose uploads have gone quiet.
type Reaper struct {
	cfg   Config
	round sync.Mutex // one round at a time

	decisions *prometheus.CounterVec
	rounds    prometheus.Counter
	lastRound prometheus.Gauge
	pending   prometheus.Gauge
}

var _ prometheus.Collector = (*Reaper)(nil)

// New returns a Reaper for cfg.
func New(cfg Config) (*Reaper, error) {
	if cfg.Tombstones == nil || cfg.Counters == nil || cfg.Teardown == nil {
		return nil, errors.New("reaper: tombstones, counters and teardown are required")
	}
	if cfg.CheckPeriod <= 0 {
		cfg.CheckPeriod = DefaultCheckPeriod
	}
	if cfg.UploadLimit == 0 {
		cfg.UploadLimit = DefaultUploadLimit
	}
	if cfg.FailureThreshold <= 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	return &Reaper{
		cfg: cfg,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qsfs_reaper_decisions_total",
			Help: "Decisions of the reaper per tombstoned volume and round.",
		}, []string{"decision"}),
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qsfs_reaper_rounds_total",
			Help: "Rounds the reaper has run.",
		}),
		lastRound: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qsfs_reaper_last_round_timestamp_seconds",
			Help: "Unix time of the reaper's last round.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qsfs_reaper_tombstones",
			Help: "Tombstoned volumes left after the reaper's last round.",
		}),
	}, nil
}

// Describe implements prometheus.Collector.
func (r *Reaper) Describe(ch chan<- *prometheus.Desc) {
	r.decisions.Describe(ch)
	r.rounds.Describe(ch)
	r.lastRound.Describe(ch)
	r.pending.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Reaper) Collect(ch chan<- prometheus.Metric) {
	r.decisions.Collect(ch)
	r.rounds.Collect(ch)
	r.lastRound.Collect(ch)
	r.pending.Collect(ch)
}

// Add writes a tombstone for volume name/id, with a first sample of its
// upload counter when it can be read, so the first round can decide.
func (r *Reaper) Add(name, id string) error {
	now := r.cfg.Now()
	t := Tombstone{Name: name, ID: id, Time: now}
	if c, err := r.cfg.Counters(id); err == nil {
		t.Sampled, t.LastTx, t.SampleTime = true, c.TxBytes, now
	}
	return r.cfg.Tombstones.Put(t)
}

// Run runs a round at once and then every CheckPeriod until ctx is done.
func (r *Reaper) Run(ctx context.Context) {
	tick := time.NewTicker(r.cfg.CheckPeriod)
	defer tick.Stop()
	for {
		if _, err := r.RunOnce(ctx); err != nil {
			r.cfg.Log.WithError(err).Warn("reaper round")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// RunOnce runs one round now: each tombstoned volume whose last sample is
// at least (about) CheckPeriod old, or that has none, is looked at once.
// The error reports tombstones that could not be read or written.
func (r *Reaper) RunOnce(ctx context.Context) ([]Result, error) {
	r.round.Lock()
	defer r.round.Unlock()
	now := r.cfg.Now()
	stones, err := r.cfg.Tombstones.List()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var results []Result
	left := 0
	for _, t := range stones {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		res, perr := r.check(ctx, t, now)
		if perr != nil {
			errs = append(errs, perr)
		}
		results = append(results, res)
		if res.Decision != TornDownIdle && res.Decision != TornDownFailed {
			left++
		}
		if res.Decision != NotDue {
			r.decisions.WithLabelValues(string(res.Decision)).Inc()
		}
	}
	r.rounds.Inc()
	r.lastRound.Set(float64(now.Unix()))
	r.pending.Set(float64(left))
	return results, errors.Join(errs...)
}

// check decides for one tombstone and persists the new state. The second
// error is a tombstone write failure.
func (r *Reaper) check(ctx context.Context, t Tombstone, now time.Time) (Result, error) {
	res := Result{ID: t.ID, Name: t.Name}
	log := r.cfg.Log.WithFields(logrus.Fields{"volume": t.Name, "id": t.ID})
	if !t.Reaping {
		// A tenth of the period of slack absorbs ticker jitter.
		if t.Sampled && now.Sub(t.SampleTime) < r.cfg.CheckPeriod-r.cfg.CheckPeriod/10 {
			res.Decision = NotDue
			return res, nil
		}
		c, err := r.cfg.Counters(t.ID)
		switch {
		case err != nil:
			t.Failures++
			res.Err = err
			if t.Failures < r.cfg.FailureThreshold {
				res.Decision = ReadFailed
				log.WithError(err).WithField("failures", t.Failures).Info("reaper: counters unreadable")
				return res, r.cfg.Tombstones.Put(t)
			}
			t.Reaping, t.Reason = true, reasonUnreadable
		case !t.Sampled:
			t.Sampled, t.LastTx, t.SampleTime, t.Failures = true, c.TxBytes, now, 0
			res.Decision = Sampled
			log.WithField("tx_bytes", c.TxBytes).Debug("reaper: first sample")
			return res, r.cfg.Tombstones.Put(t)
		default:
			sent := c.TxBytes - t.LastTx
			if c.TxBytes < t.LastTx {
				// The counters were reset (namespace re-created).
				sent = c.TxBytes
			}
			res.Sent = sent
			t.Failures = 0
			if sent >= r.cfg.UploadLimit {
				t.LastTx, t.SampleTime = c.TxBytes, now
				res.Decision = Uploading
				log.WithField("sent", sent).Debug("reaper: still uploading")
				return res, r.cfg.Tombstones.Put(t)
			}
			t.Reaping, t.Reason = true, reasonIdle
		}
		// Persist the decision first, so a restart does not start over.
		if err := r.cfg.Tombstones.Put(t); err != nil {
			return res, err
		}
	}
	log.WithFields(logrus.Fields{"reason": t.Reason, "sent": res.Sent, "failures": t.Failures}).Info("reaper: tearing down")
	if err := r.cfg.Teardown(ctx, t.ID); err != nil {
		res.Decision, res.Err = TeardownFailed, err
		log.WithError(err).Warn("reaper: teardown failed, retrying next round")
		return res, nil
	}
	res.Decision = TornDownIdle
	if t.Reason == reasonUnreadable {
		res.Decision = TornDownFailed
	}
	if err := r.cfg.Tombstones.Delete(t.ID); err != nil {
		return res, fmt.Errorf("after teardown: %w", err)
	}
	return res, nil
}

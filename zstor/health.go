package zstor

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/meta"
)

// Backend states follow the official monitor: a backend failing for
// missingAfter becomes Unreachable (not readable); one with at most
// lowSpace bytes free is not writable.
const (
	missingAfter = 15 * time.Minute
	lowSpace     = 100 << 20
	probeTimeout = 3 * time.Second
)

type backendState struct {
	probed    bool
	reachable bool
	lowSpace  bool
	failSince time.Time
}

// health is the daemon's view of every backend, refreshed by probe.
type health struct {
	eng *engine.Engine
	log *logrus.Entry

	mu     sync.Mutex
	states map[string]*backendState
	rows   []engine.BackendStatus
}

var _ engine.Health = (*health)(nil)

func newHealth(eng *engine.Engine, log *logrus.Entry) *health {
	return &health{eng: eng, log: log, states: map[string]*backendState{}}
}

// probe refreshes all backends; it reports whether one came back.
func (h *health) probe() bool {
	rows := h.eng.Status(probeTimeout)
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	cameBack := false
	for _, r := range rows {
		id := meta.BackendID(r.Backend) + "|" + r.Type
		st := h.states[id]
		if st == nil {
			st = &backendState{}
			h.states[id] = st
		}
		if r.Reachable {
			if st.probed && !st.reachable {
				cameBack = true
				h.log.WithField("backend", meta.BackendID(r.Backend)).Info("backend reachable again")
			}
			st.reachable, st.failSince = true, time.Time{}
			free := r.Int("data_limits_bytes") - r.Int("data_size_bytes")
			if r.Int("data_limits_bytes") == 0 {
				free = r.Int("data_disk_freespace_bytes")
			}
			st.lowSpace = free <= lowSpace && (r.Info["data_disk_freespace_bytes"] != "" || r.Int("data_limits_bytes") > 0)
		} else {
			if !st.probed || st.reachable {
				st.failSince = now
				h.log.WithFields(logrus.Fields{"backend": meta.BackendID(r.Backend), "error": r.Error}).Warn("backend unreachable")
			}
			st.reachable = false
		}
		st.probed = true
	}
	h.rows = rows
	return cameBack
}

func (h *health) state(b config.Backend) *backendState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.states[meta.BackendID(b)+"|data"]
}

// Writable: reachable with space, or not probed yet.
func (h *health) Writable(b config.Backend) bool {
	st := h.state(b)
	return st == nil || (st.reachable && !st.lowSpace)
}

// Readable: anything not failing for longer than missingAfter.
func (h *health) Readable(b config.Backend) bool {
	st := h.state(b)
	return st == nil || st.reachable || time.Since(st.failSince) < missingAfter
}

// Healthy: reachable at the last probe (or not probed yet).
func (h *health) Healthy(b config.Backend) bool {
	st := h.state(b)
	return st == nil || st.reachable
}

func (h *health) snapshot() []engine.BackendStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]engine.BackendStatus(nil), h.rows...)
}

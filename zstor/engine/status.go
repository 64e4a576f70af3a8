package engine

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/qsfs/qsfs/zstor/backend"
	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/meta"
)

// BackendStatus is one row of `zstor status` and of the metrics.
type BackendStatus struct {
	Backend   config.Backend
	Type      string // "data" or "meta"
	Reachable bool
	Error     string
	Info      map[string]string // NSINFO fields when reachable
}

// Int returns an NSINFO field as a number (0 when absent).
func (s BackendStatus) Int(field string) int64 {
	v, _ := strconv.ParseInt(s.Info[field], 10, 64)
	return v
}

// Probe connects to b (mode checked) and returns its NSINFO.
func Probe(b config.Backend, mode backend.Mode, timeout time.Duration) (map[string]string, error) {
	c, err := backend.Dial(b, mode, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.NSInfo()
}

// Status probes every data and metadata backend in parallel.
func (e *Engine) Status(timeout time.Duration) []BackendStatus {
	cfg := e.Config()
	var rows []BackendStatus
	for _, b := range cfg.Backends() {
		rows = append(rows, BackendStatus{Backend: b, Type: "data"})
	}
	for _, b := range cfg.Meta.Config.Backends {
		rows = append(rows, BackendStatus{Backend: b, Type: "meta"})
	}
	var wg sync.WaitGroup
	for i := range rows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mode := backend.Sequential
			if rows[i].Type == "meta" {
				mode = backend.UserKey
			}
			info, err := Probe(rows[i].Backend, mode, timeout)
			if err != nil {
				rows[i].Error = err.Error()
				return
			}
			rows[i].Reachable, rows[i].Info = true, info
		}()
	}
	wg.Wait()
	return rows
}

// Test checks that every data backend is a reachable sequential-mode
// namespace, every metadata backend a reachable user-key namespace, and
// that a shard distribution exists.
func (e *Engine) Test() error {
	cfg := e.Config()
	var errs []error
	for _, s := range e.Status(10 * time.Second) {
		if !s.Reachable {
			errs = append(errs, fmt.Errorf("%s backend %s: %s", s.Type, meta.BackendID(s.Backend), s.Error))
		}
	}
	if !backend.PlacementOf(cfg).Feasible(cfg) {
		errs = append(errs, backend.ErrNoDistribution)
	}
	return errors.Join(errs...)
}

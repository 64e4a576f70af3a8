package driver

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/qsfs/qsfs/netns"
)

// stackCollector exports each volume's state, mount count, processes and
// local data size.
type stackCollector struct {
	d                                      *Driver
	state, mounts, procUp, restarts, local *prometheus.Desc
}

var _ prometheus.Collector = (*stackCollector)(nil)

func newStackCollector(d *Driver) *stackCollector {
	l := []string{"name", "volume"}
	return &stackCollector{d: d,
		state:    prometheus.NewDesc("qsfs_volume_state", "1 for the volume's current state.", append(l, "state"), nil),
		mounts:   prometheus.NewDesc("qsfs_volume_mounts", "Outstanding Mount references.", l, nil),
		procUp:   prometheus.NewDesc("qsfs_volume_process_up", "1 when the stack process runs.", append(l, "process"), nil),
		restarts: prometheus.NewDesc("qsfs_volume_process_restarts_total", "Restarts of the stack process by the supervisor.", append(l, "process"), nil),
		local:    prometheus.NewDesc("qsfs_volume_local_bytes", "Bytes stored in the volume's local data directory.", l, nil),
	}
}

func (c *stackCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.mounts, c.procUp, c.restarts, c.local} {
		ch <- d
	}
}

func (c *stackCollector) Collect(ch chan<- prometheus.Metric) {
	c.d.mu.Lock()
	vs := make([]*vol, 0, len(c.d.vols))
	for _, v := range c.d.vols {
		vs = append(vs, v)
	}
	c.d.mu.Unlock()
	for _, v := range vs {
		r, state, _, st := v.snapshot()
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, r.Name, r.ID, state)
		ch <- prometheus.MustNewConstMetric(c.mounts, prometheus.GaugeValue, float64(r.MountCount()), r.Name, r.ID)
		ch <- prometheus.MustNewConstMetric(c.local, prometheus.GaugeValue, float64(DataSize(c.d.store.DataDir(r.ID))), r.Name, r.ID)
		if st == nil {
			continue
		}
		for name, p := range st.view().procs {
			up := 0.0
			if p.Running {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.procUp, prometheus.GaugeValue, up, r.Name, r.ID, name)
			ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(p.Restarts), r.Name, r.ID, name)
		}
	}
}

// Collectors returns the driver's metrics: stack state, per-volume network
// counters (with isolation) and the reaper's decisions.
func (d *Driver) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{newStackCollector(d)}
	if d.iso.Enabled() {
		cs = append(cs, netns.NewCollector(d.ActiveIDs,
			netns.WithCounterReader(d.iso.Counters),
			netns.WithVolumeName(func(id string) string { return d.Names()[id] })))
	}
	if g, ok := d.graveyard.(*graveyard); ok && g.reaper != nil {
		cs = append(cs, g.reaper)
	}
	return cs
}

// ZstorGatherer gathers every running zstor's metrics from inside its
// namespace, each series labelled with volume (the id) and name.
type ZstorGatherer struct {
	D       *Driver
	Timeout time.Duration
}

var _ prometheus.Gatherer = (*ZstorGatherer)(nil)

// Gather implements prometheus.Gatherer. Volumes whose zstor cannot be
// scraped are skipped (their qsfs_volume_process_up tells why).
func (g *ZstorGatherer) Gather() ([]*dto.MetricFamily, error) {
	names := g.D.Names()
	var mu sync.Mutex
	var wg sync.WaitGroup
	merged := map[string]*dto.MetricFamily{}
	for id, name := range names {
		wg.Add(1)
		go func(id, name string) {
			defer wg.Done()
			text, err := g.D.ZstorMetrics(name, g.Timeout)
			if err != nil || text == "" {
				return
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(strings.NewReader(text))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for fname, f := range fams {
				for _, m := range f.Metric {
					m.Label = append(m.Label,
						&dto.LabelPair{Name: strPtr("volume"), Value: strPtr(id)},
						&dto.LabelPair{Name: strPtr("name"), Value: strPtr(name)})
					sort.Slice(m.Label, func(i, j int) bool { return m.Label[i].GetName() < m.Label[j].GetName() })
				}
				fname = "qsfs_zstor_" + fname
				f.Name = strPtr(fname)
				if have, ok := merged[fname]; ok {
					have.Metric = append(have.Metric, f.Metric...)
				} else {
					merged[fname] = f
				}
			}
		}(id, name)
	}
	wg.Wait()
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, f := range merged {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

func strPtr(s string) *string { return &s }

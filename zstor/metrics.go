package zstor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qsfs/qsfs/zstor/meta"
)

// Command counters with the official (sic) "zstore_" names.
var (
	metricStore    = newCmdCounter("zstore_store_commands_finished", "Finished store commands")
	metricRetrieve = newCmdCounter("zstore_retrieve_commands_finished", "Finished retrieve commands")
	metricRebuild  = newCmdCounter("zstore_rebuild_commands_finished", "Finished rebuild commands")
	metricCheck    = newCmdCounter("zstore_check_commands_finished", "Finished check commands")
)

// Byte counters (qsfs additions): original bytes stored and retrieved, for
// progress displays such as a restore.
var (
	metricStoredBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zstor_stored_bytes_total", Help: "Bytes of files uploaded (before compression)"})
	metricRetrievedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zstor_retrieved_bytes_total", Help: "Bytes of files retrieved"})
)

func newCmdCounter(name, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"success"})
}

func observe(c *prometheus.CounterVec, err error) {
	if err != nil {
		c.WithLabelValues("false").Inc()
	} else {
		c.WithLabelValues("true").Inc()
	}
}

// backendGauges and backendCounters map official metric names to NSINFO
// fields.
var backendGauges = [][2]string{
	{"entries", "entries"},
	{"data_size_bytes", "data_size_bytes"},
	{"data_limit_bytes", "data_limits_bytes"},
	{"index_size_bytes", "index_size_bytes"},
	{"index_disk_freespace_bytes", "index_disk_freespace_bytes"},
	{"data_disk_freespace_bytes", "data_disk_freespace_bytes"},
}

var backendCounters = [][2]string{
	{"index_io_errors", "stats_index_io_errors"},
	{"index_faults", "stats_index_faults"},
	{"data_io_errors", "stats_data_io_errors"},
	{"data_faults", "stats_data_faults"},
}

var backendLabels = []string{"address", "namespace", "backend_type"}

// collector exports the monitor's latest backend view and the queue at
// scrape time.
type collector struct {
	d     *daemon
	descs map[string]*prometheus.Desc
}

var _ prometheus.Collector = (*collector)(nil)

func newCollector(d *daemon) *collector {
	c := &collector{d: d, descs: map[string]*prometheus.Desc{}}
	c.descs["connection_status"] = prometheus.NewDesc("connection_status", "1 when the backend is reachable", backendLabels, nil)
	for _, g := range append(append([][2]string{}, backendGauges...), backendCounters...) {
		c.descs[g[0]] = prometheus.NewDesc(g[0], "0-db namespace "+g[1], backendLabels, nil)
	}
	c.descs["zstor_queue_length"] = prometheus.NewDesc("zstor_queue_length", "Store commands queued or waiting for a retry", nil, nil)
	c.descs["zstor_failed_uploads"] = prometheus.NewDesc("zstor_failed_uploads", "Queued stores whose last attempt failed (retried with backoff)", nil, nil)
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.d.health.snapshot() {
		ns := s.Backend.NamespaceName()
		labels := []string{s.Backend.Address, ns, s.Type}
		up := 0.0
		if s.Reachable {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.descs["connection_status"], prometheus.GaugeValue, up, labels...)
		if !s.Reachable {
			continue
		}
		for _, g := range backendGauges {
			ch <- prometheus.MustNewConstMetric(c.descs[g[0]], prometheus.GaugeValue, float64(s.Int(g[1])), labels...)
		}
		for _, g := range backendCounters {
			ch <- prometheus.MustNewConstMetric(c.descs[g[0]], prometheus.CounterValue, float64(s.Int(g[1])), labels...)
		}
	}
	q := c.d.queue.stats()
	ch <- prometheus.MustNewConstMetric(c.descs["zstor_queue_length"], prometheus.GaugeValue, float64(q.Queued+q.Running))
	ch <- prometheus.MustNewConstMetric(c.descs["zstor_failed_uploads"], prometheus.GaugeValue, float64(q.Failing))
}

var _ = meta.BackendID

package netns

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// Collector exports each volume's tagged counters as Prometheus metrics,
// reading them at scrape time.
type Collector struct {
	ids   func() []string
	name  func(id string) string
	read  func(id string) (Counters, error)
	descs []*prometheus.Desc // rx bytes, tx bytes, rx packets, tx packets, up
}

var _ prometheus.Collector = (*Collector)(nil)

// CollectorOption changes a Collector.
type CollectorOption func(*Collector)

// WithVolumeName adds a label `name` to every series, the volume name that
// name returns for an id.
func WithVolumeName(name func(id string) string) CollectorOption {
	return func(c *Collector) { c.name = name }
}

// WithCounterReader replaces ReadCounters (for tests).
func WithCounterReader(read func(id string) (Counters, error)) CollectorOption {
	return func(c *Collector) { c.read = read }
}

// NewCollector returns a collector of the counters of the volumes ids
// returns at each scrape. Series carry the label `volume` (the id):
//
//	qsfs_volume_network_receive_bytes_total
//	qsfs_volume_network_transmit_bytes_total
//	qsfs_volume_network_receive_packets_total
//	qsfs_volume_network_transmit_packets_total
//	qsfs_volume_network_counters_up  (0 when the counters could not be read)
func NewCollector(ids func() []string, opts ...CollectorOption) prometheus.Collector {
	c := &Collector{ids: ids, read: ReadCounters}
	for _, o := range opts {
		o(c)
	}
	labels := []string{"volume"}
	if c.name != nil {
		labels = append(labels, "name")
	}
	for _, d := range []struct{ name, help string }{
		{"receive_bytes_total", "Bytes received from the volume's backends, headers included."},
		{"transmit_bytes_total", "Bytes sent to the volume's backends (uploads), headers included."},
		{"receive_packets_total", "Packets received from the volume's backends."},
		{"transmit_packets_total", "Packets sent to the volume's backends."},
		{"counters_up", "1 when the volume's network counters could be read, else 0."},
	} {
		c.descs = append(c.descs, prometheus.NewDesc("qsfs_volume_network_"+d.name, d.help, labels, nil))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, id := range c.ids() {
		labels := []string{id}
		if c.name != nil {
			labels = append(labels, c.name(id))
		}
		cnt, err := c.read(id)
		if err != nil {
			logrus.WithFields(logrus.Fields{"volume": id}).WithError(err).Debug("read counters")
			ch <- prometheus.MustNewConstMetric(c.descs[4], prometheus.GaugeValue, 0, labels...)
			continue
		}
		for i, v := range []uint64{cnt.RxBytes, cnt.TxBytes, cnt.RxPackets, cnt.TxPackets} {
			ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.CounterValue, float64(v), labels...)
		}
		ch <- prometheus.MustNewConstMetric(c.descs[4], prometheus.GaugeValue, 1, labels...)
	}
}

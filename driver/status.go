package driver

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Status is a volume's report for `docker volume inspect` (as a map) and
// `qsfs volume status` (as JSON). It never holds a key or password.
type Status struct {
	Name       string            `json:"name"`
	ID         string            `json:"id"`
	State      string            `json:"state"`
	Mounts     int               `json:"mounts"`
	Mountpoint string            `json:"mountpoint"`
	Namespace  string            `json:"namespace"`
	Processes  map[string]string `json:"processes"`
	LocalData  string            `json:"local_data"`
	LocalBytes int64             `json:"local_bytes"`
	Backends   map[string]any    `json:"backends"`
	Counters   map[string]uint64 `json:"counters,omitempty"`
	Zstor      string            `json:"zstor,omitempty"`
	Uploads    map[string]uint64 `json:"uploads,omitempty"` // zstor's queue length and failed uploads
	LastError  string            `json:"last_error,omitempty"`
	Created    time.Time         `json:"created"`
	Tombstoned bool              `json:"tombstoned,omitempty"`
}

// Map returns the status as docker volume inspect shows it.
func (s *Status) Map() map[string]any {
	m := map[string]any{
		"id":         s.ID,
		"state":      s.State,
		"mounts":     s.Mounts,
		"namespace":  s.Namespace,
		"processes":  s.Processes,
		"local_data": s.LocalData,
		"backends":   s.Backends,
	}
	if s.LastError != "" {
		m["last_error"] = s.LastError
	}
	if s.Zstor != "" {
		m["zstor"] = s.Zstor
	}
	return m
}

func (d *Driver) status(v *vol) map[string]any {
	return d.statusOf(v, false).Map()
}

func (d *Driver) statusOf(v *vol, full bool) *Status {
	r, state, lastErr, st := v.snapshot()
	s := &Status{
		Name: r.Name, ID: r.ID, State: state, Mounts: r.MountCount(),
		Processes: map[string]string{}, Backends: r.Spec.Public(),
		LastError: lastErr, Created: r.CreatedAt, Namespace: "-",
	}
	if r.Spec.Archived() {
		// The effective prefix, also when it is the default: restoring
		// the volume on another host needs meta_prefix=<this>.
		s.Backends["meta_prefix"] = r.Spec.MetaPrefix(r.ID)
	}
	if state == StateMounted {
		s.Mountpoint = d.Mountpoint(r.Name)
	}
	if st != nil {
		st := st.view()
		if st.netName != "" {
			s.Namespace = st.netName
		} else if st.netUp {
			s.Namespace = "host (isolation off)"
		}
		for name, p := range st.procs {
			s.Processes[name] = p.String()
		}
		s.Zstor = st.zstorNote
	}
	if len(s.Processes) == 0 {
		s.Processes["all"] = "stopped"
	}
	s.LocalBytes = DataSize(d.store.DataDir(r.ID))
	s.LocalData = FormatSize(uint64(s.LocalBytes))
	if full && d.iso.Enabled() && st != nil {
		if c, err := d.iso.Counters(r.ID); err == nil {
			s.Counters = map[string]uint64{"rx_bytes": c.RxBytes, "tx_bytes": c.TxBytes,
				"rx_packets": c.RxPackets, "tx_packets": c.TxPackets}
		}
	}
	if full && st != nil {
		if text, err := st.zstorMetrics(2 * time.Second); err == nil && text != "" {
			s.Uploads = uploadStats(text)
		}
	}
	return s
}

// uploadStats picks zstor's queue length and failed uploads out of its
// Prometheus text.
func uploadStats(text string) map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range strings.Split(text, "\n") {
		for _, m := range []struct{ metric, key string }{
			{"zstor_queue_length", "pending"}, {"zstor_failed_uploads", "failed"},
		} {
			if rest, ok := strings.CutPrefix(line, m.metric); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
				f := strings.Fields(rest)
				if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
					out[m.key] += uint64(v)
				}
			}
		}
	}
	return out
}

// stackView is a consistent copy of what Status needs from a Stack.
type stackView struct {
	netName   string
	netUp     bool
	procs     map[string]ProcessStatus
	zstorNote string
}

func (s *Stack) view() stackView {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	v := stackView{procs: map[string]ProcessStatus{}, zstorNote: s.zstorNote}
	if s.net != nil {
		v.netName, v.netUp = s.net.Name, true
	}
	for _, p := range []*Process{s.zstor, s.zdb, s.zdbfs} {
		if p != nil {
			v.procs[p.Name] = p.Status()
		}
	}
	return v
}

// VolumeStatus returns the full status of volume name, with counters.
func (d *Driver) VolumeStatus(name string) (*Status, error) {
	v, err := d.lookup(name)
	if err != nil {
		if id, ok := d.graveyard.IsBuried(name); ok {
			return &Status{Name: name, ID: id, State: "tombstoned", Tombstoned: true, Namespace: "-",
				Processes: map[string]string{}, Backends: map[string]any{}}, nil
		}
		return nil, err
	}
	return d.statusOf(v, true), nil
}

// ZstorMetrics fetches the Prometheus text of volume name's zstor from
// inside its namespace ("" when zstor does not run).
func (d *Driver) ZstorMetrics(name string, timeout time.Duration) (string, error) {
	v, err := d.lookup(name)
	if err != nil {
		return "", err
	}
	_, _, _, st := v.snapshot()
	if st == nil {
		return "", nil
	}
	return st.zstorMetrics(timeout)
}

func (s *Stack) zstorMetrics(timeout time.Duration) (string, error) {
	s.viewMu.Lock()
	nw, port, running := s.net, s.metricsPort, s.zstor != nil
	s.viewMu.Unlock()
	if nw == nil || !running || port == 0 {
		return "", nil
	}
	host := nw.Addr.String()
	if nw.Addr.Is6() {
		host = "[" + host + "]"
	}
	c := http.Client{Timeout: timeout}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/metrics", host, port))
	if err != nil {
		return "", fmt.Errorf("scrape zstor of volume %s: %w", s.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape zstor of volume %s: %s", s.name, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", fmt.Errorf("scrape zstor of volume %s: %w", s.name, err)
	}
	return string(b), nil
}

// Names returns id -> name of every live volume (for metric labels).
func (d *Driver) Names() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]string, len(d.vols))
	for name, v := range d.vols {
		v.mu.Lock()
		out[v.rec.ID] = name
		v.mu.Unlock()
	}
	return out
}

// States returns name -> state of every live volume.
func (d *Driver) States() map[string]string {
	d.mu.Lock()
	vs := make(map[string]*vol, len(d.vols))
	for k, v := range d.vols {
		vs[k] = v
	}
	d.mu.Unlock()
	out := make(map[string]string, len(vs))
	for name, v := range vs {
		_, state, _, _ := v.snapshot()
		out[name] = state
	}
	return out
}

// ActiveIDs returns the ids of volumes whose network is up.
func (d *Driver) ActiveIDs() []string {
	d.mu.Lock()
	vs := make([]*vol, 0, len(d.vols))
	for _, v := range d.vols {
		vs = append(vs, v)
	}
	d.mu.Unlock()
	var ids []string
	for _, v := range vs {
		r, _, _, st := v.snapshot()
		if st != nil && st.view().netUp {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// FormatTable writes s as the table `qsfs volume status` prints.
func (s *Status) FormatTable(w io.Writer) {
	row := func(k, v string) { fmt.Fprintf(w, "%-14s %s\n", k, v) }
	row("NAME", s.Name)
	row("ID", s.ID)
	row("STATE", s.State)
	row("MOUNTS", fmt.Sprint(s.Mounts))
	if s.Mountpoint != "" {
		row("MOUNTPOINT", s.Mountpoint)
	}
	row("NAMESPACE", s.Namespace)
	for _, n := range []string{"zstor", "zdb", "zdbfs", "all"} {
		if p, ok := s.Processes[n]; ok {
			row(strings.ToUpper(n), p)
		}
	}
	row("LOCAL DATA", s.LocalData)
	if s.Counters != nil {
		row("TX", fmt.Sprintf("%d bytes, %d packets (uploads)", s.Counters["tx_bytes"], s.Counters["tx_packets"]))
		row("RX", fmt.Sprintf("%d bytes, %d packets", s.Counters["rx_bytes"], s.Counters["rx_packets"]))
	}
	for _, k := range []string{"groups", "meta", "meta_prefix", "shards", "redundancy", "encryption", "compression", "cache", "rotate"} {
		if v, ok := s.Backends[k]; ok {
			row(strings.ToUpper(k), fmt.Sprint(v))
		}
	}
	if v, ok := s.Backends["backends"]; ok {
		row("BACKENDS", fmt.Sprint(v))
	}
	if s.Uploads != nil {
		row("UPLOADS", fmt.Sprintf("%d pending, %d failed", s.Uploads["pending"], s.Uploads["failed"]))
	}
	if s.Zstor != "" {
		row("NOTE", s.Zstor)
	}
	if s.LastError != "" {
		row("LAST ERROR", s.LastError)
	}
}

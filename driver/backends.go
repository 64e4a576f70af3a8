package driver

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	zcfg "github.com/qsfs/qsfs/zstor/config"
)

// DefaultBackendPort is used for a backend written without a port.
const DefaultBackendPort = 9900

// The compact backend syntax used by -o and compose driver_opts:
//
//	backend  = address [ "/" namespace [ "/" password ] ]
//	address  = IPv4 [ ":" port ] | "[" IPv6 "]" [ ":" port ] | IPv6
//	backends = backend { "," backend }
//	groups   = backends { ";" backends }
//
// The password is everything after the second '/', so it may contain '/'
// but not ',' or ';' (use password_file or config_file for such passwords).

// ParseBackend parses one backend.
func ParseBackend(v string) (Backend, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return Backend{}, fmt.Errorf("empty backend: write ADDRESS:PORT[/NAMESPACE[/PASSWORD]], e.g. 10.0.0.1:9900/ns/secret or [2a02::1]:9900/ns")
	}
	addr, rest, _ := strings.Cut(v, "/")
	ns, pw, _ := strings.Cut(rest, "/")
	ap, err := parseAddress(addr)
	if err != nil {
		return Backend{}, fmt.Errorf("backend %q: %w: write ADDRESS:PORT[/NAMESPACE[/PASSWORD]], e.g. 10.0.0.1:9900/ns or [2a02::1]:9900/ns (IP literals only)", redactBackend(v), err)
	}
	return Backend{Address: ap.String(), Namespace: ns, Password: pw}, nil
}

// parseAddress accepts an IP literal with port, or a bare IP (port 9900).
func parseAddress(s string) (netip.AddrPort, error) {
	if ap, err := zcfg.ParseAddress(s); err == nil {
		return ap, nil
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return netip.AddrPortFrom(a, DefaultBackendPort), nil
	}
	return netip.AddrPort{}, fmt.Errorf("address %q is not an IP literal with an optional port", s)
}

// redactBackend hides the password of a backend written in compact syntax.
func redactBackend(v string) string {
	addr, rest, ok := strings.Cut(v, "/")
	if !ok {
		return v
	}
	ns, _, ok := strings.Cut(rest, "/")
	if !ok {
		return v
	}
	return addr + "/" + ns + "/***"
}

// ParseBackends parses a comma separated list of backends.
func ParseBackends(v string) ([]Backend, error) {
	var out []Backend
	for _, part := range strings.Split(v, ",") {
		b, err := ParseBackend(part)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// ParseGroups parses groups separated by ';', each a list of backends.
func ParseGroups(v string) ([][]Backend, error) {
	var out [][]Backend
	for i, part := range strings.Split(v, ";") {
		if strings.TrimSpace(part) == "" {
			if i == len(strings.Split(v, ";"))-1 && i > 0 {
				continue // tolerate a trailing ';'
			}
			return nil, fmt.Errorf("group %d is empty: separate groups with ';' and backends with ','", i+1)
		}
		bs, err := ParseBackends(part)
		if err != nil {
			return nil, fmt.Errorf("group %d: %w", i+1, err)
		}
		out = append(out, bs)
	}
	return out, nil
}

// String writes b in compact syntax without its password.
func (b Backend) String() string {
	s := b.Address
	if b.Namespace != "" {
		s += "/" + b.Namespace
	}
	return s
}

// Validate checks s as a whole; errors name the option to fix.
func (s *Spec) Validate() error {
	if s.Cache == 0 {
		return optErr("cache", "must be more than 0: write e.g. cache=10G")
	}
	if !s.Archived() {
		if len(s.Meta.Backends) > 0 {
			return optErr("groups", "metadata backends are set but no data groups: add groups=... (or group1=...), or remove meta")
		}
		return nil
	}
	if s.MinimalShards == 0 {
		return optErr("minimal_shards", "required when groups are set: write e.g. minimal_shards=2")
	}
	if s.ExpectedShards == 0 {
		return optErr("expected_shards", "required when groups are set: write e.g. expected_shards=4")
	}
	if s.ExpectedShards < s.MinimalShards {
		return optErr("expected_shards", "%d is less than minimal_shards %d: raise expected_shards or lower minimal_shards", s.ExpectedShards, s.MinimalShards)
	}
	if s.MinimalShards > 255 || s.ExpectedShards > 255 {
		return optErr("expected_shards", "shard counts must be at most 255")
	}
	total := 0
	for _, g := range s.Groups {
		total += len(g)
	}
	if total < s.ExpectedShards {
		return optErr("groups", "%d backends for expected_shards %d: add backends or lower expected_shards", total, s.ExpectedShards)
	}
	if s.RedundantGroups >= len(s.Groups) && s.RedundantGroups > 0 {
		return optErr("redundant_groups", "%d is not less than the number of groups (%d): lower it or add groups", s.RedundantGroups, len(s.Groups))
	}
	if s.Encryption.Key == "" {
		return optErr("encryption_key", "required when groups are set: give key_file=<name in the secrets directory> or encryption_key=<64 hex characters> (e.g. from `openssl rand -hex 32`)")
	}
	if _, err := zcfg.DecodeKey(s.Encryption.Key); err != nil {
		return optErr("encryption_key", "%v: give 64 hex characters (e.g. from `openssl rand -hex 32`)", err)
	}
	if s.Encryption.Algorithm != DefaultAlgorithm {
		return optErr("encryption_algorithm", "%q is not supported: use AES or leave it out", s.Encryption.Algorithm)
	}
	if s.Meta.Encryption.Key == "" {
		s.Meta.Encryption.Key = s.Encryption.Key
	}
	if _, err := zcfg.DecodeKey(s.Meta.Encryption.Key); err != nil {
		return optErr("meta_encryption_key", "%v: give 64 hex characters or leave it out to use encryption_key", err)
	}
	if s.Meta.Encryption.Algorithm != DefaultAlgorithm {
		return optErr("meta_encryption_algorithm", "%q is not supported: use AES or leave it out", s.Meta.Encryption.Algorithm)
	}
	if s.Compression != DefaultCompression {
		return optErr("compression", "%q is not supported: use snappy or leave it out", s.Compression)
	}
	if len(s.Meta.Backends) != zcfg.MetaBackends {
		return optErr("meta", "%d metadata backends given: give exactly %d, e.g. meta=10.0.0.1:9900/m1,10.0.0.2:9900/m2,10.0.0.3:9900/m3,10.0.0.4:9900/m4", len(s.Meta.Backends), zcfg.MetaBackends)
	}
	// Final check with the zstor format's own rules, on a throwaway copy.
	c := s.Zstor(Runtime{})
	if err := c.Validate(); err != nil {
		return optErr("config", "%v", err)
	}
	return nil
}

// Runtime is what the plugin adds to a volume's zstor.toml at mount time.
type Runtime struct {
	Prefix          string // meta prefix when the spec has none
	Root            string // zstor root: stored paths are keyed relative to it
	Socket          string
	PidFile         string
	ZdbDataDirPath  string
	ZdbfsMountpoint string
	PrometheusPort  uint16
}

// Zstor returns the zstor configuration of an archived volume.
func (s *Spec) Zstor(rt Runtime) *zcfg.Config {
	maxMiB := s.MaxZdbDataDirSize
	if maxMiB == 0 {
		maxMiB = s.Cache >> 20
		if maxMiB == 0 {
			maxMiB = 1
		}
	}
	prefix := s.Meta.Prefix
	if prefix == "" {
		prefix = rt.Prefix
	}
	if prefix == "" {
		prefix = "qsfs"
	}
	c := &zcfg.Config{
		MinimalShards:     s.MinimalShards,
		ExpectedShards:    s.ExpectedShards,
		RedundantGroups:   s.RedundantGroups,
		RedundantNodes:    s.RedundantNodes,
		Root:              rt.Root,
		Socket:            rt.Socket,
		PidFile:           rt.PidFile,
		ZdbDataDirPath:    rt.ZdbDataDirPath,
		MaxZdbDataDirSize: maxMiB,
		ZdbfsMountpoint:   rt.ZdbfsMountpoint,
		PrometheusPort:    rt.PrometheusPort,
		Encryption:        zcfg.Encryption{Algorithm: s.Encryption.Algorithm, Key: s.Encryption.Key},
		Compression:       zcfg.Compression{Algorithm: s.Compression},
		Meta: zcfg.Meta{Type: "zdb", Config: zcfg.MetaConfig{
			Prefix:     prefix,
			Encryption: zcfg.Encryption{Algorithm: s.Meta.Encryption.Algorithm, Key: s.Meta.Encryption.Key},
			Backends:   toZstorBackends(s.Meta.Backends),
		}},
	}
	for _, g := range s.Groups {
		c.Groups = append(c.Groups, zcfg.Group{Backends: toZstorBackends(g)})
	}
	return c
}

func toZstorBackends(bs []Backend) []zcfg.Backend {
	out := make([]zcfg.Backend, len(bs))
	for i, b := range bs {
		out[i] = zcfg.Backend{Address: b.Address}
		if b.Namespace != "" {
			out[i].Namespace = zcfg.String(b.Namespace)
		}
		if b.Password != "" {
			out[i].Password = zcfg.String(b.Password)
		}
	}
	return out
}

// BackendAddrs returns every data and metadata backend address (for the
// namespace firewall).
func (s *Spec) BackendAddrs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(b Backend) {
		if !seen[b.Address] {
			seen[b.Address] = true
			out = append(out, b.Address)
		}
	}
	for _, g := range s.Groups {
		for _, b := range g {
			add(b)
		}
	}
	for _, b := range s.Meta.Backends {
		add(b)
	}
	return out
}

// DefaultMetaPrefix is the metadata prefix of volume id when the spec sets
// none: random per Create, so a removed and re-created name never mixes with
// the old volume's objects.
func DefaultMetaPrefix(id string) string { return "qsfs-" + id }

// MetaPrefix returns the metadata prefix volume id's zstor uses: meta_prefix
// when set, else DefaultMetaPrefix(id). Recovering the volume elsewhere
// needs it.
func (s *Spec) MetaPrefix(id string) string {
	if s.Meta.Prefix != "" {
		return s.Meta.Prefix
	}
	return DefaultMetaPrefix(id)
}

// Public returns the spec as shown in Status: no key, no password.
func (s *Spec) Public() map[string]any {
	m := map[string]any{
		"cache":  FormatSize(s.Cache),
		"rotate": time.Duration(s.Rotate).String(),
	}
	if !s.Archived() {
		m["backends"] = "none (local only)"
		return m
	}
	var groups []string
	for _, g := range s.Groups {
		var bs []string
		for _, b := range g {
			bs = append(bs, b.String())
		}
		groups = append(groups, strings.Join(bs, ","))
	}
	var meta []string
	for _, b := range s.Meta.Backends {
		meta = append(meta, b.String())
	}
	m["groups"] = strings.Join(groups, ";")
	m["meta"] = strings.Join(meta, ",")
	m["shards"] = fmt.Sprintf("%d/%d", s.MinimalShards, s.ExpectedShards)
	m["redundancy"] = fmt.Sprintf("groups=%d nodes=%d", s.RedundantGroups, s.RedundantNodes)
	m["encryption"] = s.Encryption.Algorithm
	m["compression"] = s.Compression
	if s.Meta.Prefix != "" {
		m["meta_prefix"] = s.Meta.Prefix
	}
	return m
}

// FormatSize writes n bytes with a binary unit.
func FormatSize(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f == float64(uint64(f)) {
		return fmt.Sprintf("%d%s", uint64(f), units[i])
	}
	return fmt.Sprintf("%.1f%s", f, units[i])
}

package plugin

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/driver"
)

// Settings are the plugin-wide settings, read from the environment (the
// managed plugin's config.json `env`, or a systemd unit) and a few flags.
type Settings struct {
	Socket     string // QSFS_SOCKET
	StateRoot  string // QSFS_STATE_ROOT
	MountRoot  string // QSFS_MOUNT_ROOT
	SecretsDir string // QSFS_SECRETS_DIR
	LogLevel   logrus.Level

	Zdb, Zdbfs, Zstor, Hook string // program paths; "" = the binary's own subcommand

	MountTimeout, StopTimeout, DrainTimeout, ShutdownTimeout time.Duration
	ZdbDataSize                                              int
	ZdbfsURing                                               string // QSFS_ZDBFS_URING: auto, on, off

	Reaper driver.ReaperConfig

	MetricsAddr      string // "" disables
	ZstorMetricsPort uint16
	Subnet4, Subnet6 netip.Prefix
	Isolation        bool

	Defaults map[string]string // QSFS_OPT_<KEY>=value
}

// Setting describes one environment variable, for errors and docs.
type Setting struct{ Name, Default, Help string }

// Env lists every setting with its default.
var Env = []Setting{
	{"QSFS_SOCKET", "/run/docker/plugins/qsfs.sock", "VolumeDriver socket"},
	{"QSFS_STATE_ROOT", "/var/lib/qsfs", "volume state, local data and tombstones"},
	{"QSFS_MOUNT_ROOT", "/mnt/volumes", "where volumes are mounted (the managed plugin's propagatedMount)"},
	{"QSFS_SECRETS_DIR", "/etc/qsfs/secrets", "files named by key_file, meta_key_file, password_file, config_file"},
	{"QSFS_LOG_LEVEL", "info", "panic, fatal, error, warn, info, debug, trace"},
	{"QSFS_DEBUG", "0", "1 = log level debug (also shows the stack processes' output)"},
	{"QSFS_ZDB", "", "zdb program; empty = `qsfs zdb`"},
	{"QSFS_ZDBFS", "", "zdbfs program; empty = `qsfs zdbfs`"},
	{"QSFS_ZSTOR", "", "zstor program; empty = `qsfs zstor`"},
	{"QSFS_HOOK", "", "zdb hook program; empty = `qsfs hook`"},
	{"QSFS_MOUNT_TIMEOUT", "20s", "a Mount that takes longer fails and is cleaned up"},
	{"QSFS_STOP_TIMEOUT", "20s", "how long zdbfs and zdb get to stop before SIGKILL"},
	{"QSFS_DRAIN_TIMEOUT", "5m", "how long zstor gets to drain its upload queue at teardown"},
	{"QSFS_SHUTDOWN_TIMEOUT", "8s", "how long the plugin takes to stop all stacks on SIGTERM"},
	{"QSFS_ZDB_DATASIZE", "64M", "zdb --datasize (size of a data file; a full file is uploaded)"},
	{"QSFS_ZDBFS_URING", "auto", "zdbfs FUSE over io_uring: auto (when the kernel's fuse enable_uring is Y), on, off"},
	{"QSFS_REAPER_PERIOD", "10m", "how often the reaper looks at tombstoned and idle volumes"},
	{"QSFS_REAPER_UPLOAD_LIMIT", "100M", "below this many bytes uploaded per period a volume is quiet"},
	{"QSFS_REAPER_FAILURES", "10", "unreadable counters this many times in a row: tear down"},
	{"QSFS_METRICS_ADDR", ":9190", "Prometheus endpoint (/metrics); empty disables"},
	{"QSFS_ZSTOR_METRICS_PORT", "9100", "zstor's prometheus_port inside each namespace"},
	{"QSFS_SUBNET4", "100.127.0.0/16", "IPv4 pool for the namespaces' veth pairs"},
	{"QSFS_SUBNET6", "fd8c:5f0e:9a3b::/48", "IPv6 pool for the namespaces' veth pairs"},
	{"QSFS_ISOLATION", "on", "off = no network namespace per volume (hosts without netns)"},
	{"QSFS_OPT_<KEY>", "", "plugin-wide default of volume option <key>, e.g. QSFS_OPT_GROUPS"},
}

// OptPrefix starts the environment variables that set volume defaults.
const OptPrefix = "QSFS_OPT_"

// LoadSettings reads the settings from getenv/environ.
func LoadSettings(getenv func(string) string, environ []string) (*Settings, error) {
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, s := range Env {
			if s.Name == name {
				return s.Default
			}
		}
		return ""
	}
	s := &Settings{
		Socket: get("QSFS_SOCKET"), StateRoot: get("QSFS_STATE_ROOT"), MountRoot: get("QSFS_MOUNT_ROOT"),
		SecretsDir: get("QSFS_SECRETS_DIR"),
		Zdb:        getenv("QSFS_ZDB"), Zdbfs: getenv("QSFS_ZDBFS"), Zstor: getenv("QSFS_ZSTOR"), Hook: getenv("QSFS_HOOK"),
		MetricsAddr: strings.TrimSpace(getenv("QSFS_METRICS_ADDR")),
		Defaults:    map[string]string{},
	}
	if _, set := lookupEnv(environ, "QSFS_METRICS_ADDR"); !set {
		s.MetricsAddr = get("QSFS_METRICS_ADDR")
	}
	var err error
	lvl := get("QSFS_LOG_LEVEL")
	if s.LogLevel, err = logrus.ParseLevel(lvl); err != nil {
		return nil, fmt.Errorf("QSFS_LOG_LEVEL %q: %w", lvl, err)
	}
	if b, err := parseBool("QSFS_DEBUG", get("QSFS_DEBUG")); err != nil {
		return nil, err
	} else if b {
		s.LogLevel = logrus.DebugLevel
	}
	durs := []struct {
		name string
		dst  *time.Duration
	}{
		{"QSFS_MOUNT_TIMEOUT", &s.MountTimeout}, {"QSFS_STOP_TIMEOUT", &s.StopTimeout},
		{"QSFS_DRAIN_TIMEOUT", &s.DrainTimeout}, {"QSFS_SHUTDOWN_TIMEOUT", &s.ShutdownTimeout},
		{"QSFS_REAPER_PERIOD", &s.Reaper.CheckPeriod},
	}
	for _, d := range durs {
		v, err := time.ParseDuration(get(d.name))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%s %q: want a positive duration such as 20s or 10m", d.name, get(d.name))
		}
		*d.dst = v
	}
	n, err := driver.ParseSize(get("QSFS_REAPER_UPLOAD_LIMIT"))
	if err != nil {
		return nil, fmt.Errorf("QSFS_REAPER_UPLOAD_LIMIT: %w", err)
	}
	s.Reaper.UploadLimit = n
	if s.Reaper.FailureThreshold, err = strconv.Atoi(get("QSFS_REAPER_FAILURES")); err != nil || s.Reaper.FailureThreshold < 1 {
		return nil, fmt.Errorf("QSFS_REAPER_FAILURES %q: want a positive integer", get("QSFS_REAPER_FAILURES"))
	}
	ds, err := driver.ParseSize(get("QSFS_ZDB_DATASIZE"))
	if err != nil || ds < 512<<10 || ds >= 4<<30 {
		return nil, fmt.Errorf("QSFS_ZDB_DATASIZE %q: want a size between 512K and 4G", get("QSFS_ZDB_DATASIZE"))
	}
	s.ZdbDataSize = int(ds)
	switch s.ZdbfsURing = get("QSFS_ZDBFS_URING"); s.ZdbfsURing {
	case "auto", "on", "off":
	default:
		return nil, fmt.Errorf("QSFS_ZDBFS_URING %q: want auto, on or off", s.ZdbfsURing)
	}
	port, err := strconv.ParseUint(get("QSFS_ZSTOR_METRICS_PORT"), 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("QSFS_ZSTOR_METRICS_PORT %q: want a port number", get("QSFS_ZSTOR_METRICS_PORT"))
	}
	s.ZstorMetricsPort = uint16(port)
	if s.Subnet4, err = netip.ParsePrefix(get("QSFS_SUBNET4")); err != nil || !s.Subnet4.Addr().Is4() {
		return nil, fmt.Errorf("QSFS_SUBNET4 %q: want an IPv4 prefix such as 100.127.0.0/16", get("QSFS_SUBNET4"))
	}
	if s.Subnet6, err = netip.ParsePrefix(get("QSFS_SUBNET6")); err != nil || !s.Subnet6.Addr().Is6() {
		return nil, fmt.Errorf("QSFS_SUBNET6 %q: want an IPv6 prefix such as fd8c:5f0e:9a3b::/48", get("QSFS_SUBNET6"))
	}
	if s.Isolation, err = parseBool("QSFS_ISOLATION", get("QSFS_ISOLATION")); err != nil {
		return nil, err
	}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, OptPrefix) || strings.TrimSpace(v) == "" {
			continue
		}
		s.Defaults[driver.NormalizeKey(strings.TrimPrefix(k, OptPrefix))] = v
	}
	return s, nil
}

func lookupEnv(environ []string, name string) (string, bool) {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

func parseBool(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("%s %q: want on or off", name, v)
}

// DefaultKeys returns the names of the volume defaults that are set (never
// their values: they may hold keys).
func (s *Settings) DefaultKeys() []string {
	keys := make([]string, 0, len(s.Defaults))
	for k := range s.Defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// programs returns the argv prefixes of the stack programs.
func (s *Settings) programs(self string) driver.Programs {
	pick := func(path, sub string) []string {
		if path != "" {
			return []string{path}
		}
		return []string{self, sub}
	}
	p := driver.Programs{Zdb: pick(s.Zdb, "zdb"), Zdbfs: pick(s.Zdbfs, "zdbfs"), Zstor: pick(s.Zstor, "zstor")}
	if s.Hook != "" {
		p.Hook = []string{s.Hook}
	}
	return p
}

// selfPath returns the path of the running binary.
func selfPath() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary: %w", err)
	}
	return p, nil
}

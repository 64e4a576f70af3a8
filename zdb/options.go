package zdb

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Options are the command-line settings of `qsfs zdb`, named and defaulted
// as official zdbd's.
type Options struct {
	DataPath   string
	IndexPath  string
	Listen     string
	Port       int
	Socket     string
	DualNet    bool
	Mode       int // -1 mixed, modeUser or modeSeq
	DataSize   uint32
	MaxSize    uint64
	Admin      string
	Protect    bool
	Hook       string
	Sync       bool
	SyncTime   int
	Secure     bool
	Rotate     int
	Background bool
	LogFile    string
	Verbose    bool
	Dump       bool
	Version    bool
	Help       bool
}

const modeMixed = -1

// DefaultOptions returns the official defaults.
func DefaultOptions() Options {
	return Options{
		DataPath:  "./zdb-data",
		IndexPath: "./zdb-index",
		Listen:    "::",
		Port:      9900,
		Mode:      modeMixed,
		DataSize:  256 << 20,
	}
}

type optSpec struct {
	name   string
	hasArg bool
}

// Table order follows zdbd's long_options.
var optSpecs = []optSpec{
	{"data", true}, {"index", true}, {"listen", true}, {"port", true},
	{"socket", true}, {"dualnet", false}, {"verbose", false}, {"sync", false},
	{"synctime", true}, {"dump", false}, {"mode", true}, {"datasize", true},
	{"maxsize", true}, {"admin", true}, {"protect", false}, {"hook", true},
	{"background", false}, {"logfile", true}, {"secure", false}, {"rotate", true},
	{"version", false}, {"help", false},
}

// lookupOpt resolves a (possibly abbreviated) long option as getopt_long does:
// an exact match wins, else a unique prefix.
func lookupOpt(name string) (optSpec, error) {
	var found []optSpec
	for _, o := range optSpecs {
		if o.name == name {
			return o, nil
		}
		if strings.HasPrefix(o.name, name) {
			found = append(found, o)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return optSpec{}, fmt.Errorf("unrecognized option '%s'", name)
	}
	return optSpec{}, fmt.Errorf("option '%s' is ambiguous", name)
}

// ParseOptions parses args the way getopt_long_only does: "-data x",
// "--data x", "--data=x" and "-data=x" are all accepted.
func ParseOptions(args []string) (Options, error) {
	o := DefaultOptions()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			// official ignores non-option arguments
			continue
		}
		if a == "--" {
			break
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		spec, err := lookupOpt(name)
		if err != nil {
			return o, err
		}
		if spec.hasArg && !hasValue {
			if i+1 >= len(args) {
				return o, fmt.Errorf("option '--%s' requires an argument", spec.name)
			}
			i++
			value = args[i]
		} else if !spec.hasArg && hasValue {
			return o, fmt.Errorf("option '--%s' doesn't allow an argument", spec.name)
		}
		if err := o.set(spec.name, value); err != nil {
			return o, err
		}
	}
	if o.Protect && o.Admin == "" {
		return o, errors.New("--protect requires --admin")
	}
	return o, nil
}

func (o *Options) set(name, value string) error {
	var err error
	switch name {
	case "data":
		o.DataPath = value
	case "index":
		o.IndexPath = value
	case "listen":
		o.Listen = value
	case "port":
		o.Port, err = strconv.Atoi(value)
		if err != nil || o.Port <= 0 || o.Port > 65535 {
			return fmt.Errorf("option --port: invalid port %q", value)
		}
	case "socket":
		o.Socket = value
	case "dualnet":
		o.DualNet = true
	case "verbose":
		o.Verbose = true
	case "sync":
		o.Sync = true
	case "synctime":
		o.SyncTime, err = strconv.Atoi(value)
		if err != nil || o.SyncTime < 0 {
			return fmt.Errorf("option --synctime: invalid value %q", value)
		}
	case "dump":
		o.Dump = true
	case "mode":
		switch value {
		case "user":
			o.Mode = modeUser
		case "seq", "direct":
			o.Mode = modeSeq
		default:
			return fmt.Errorf("option --mode: unknown mode %q (expected user or seq)", value)
		}
	case "datasize":
		n, err := parseHumanSize(value)
		if err != nil {
			return fmt.Errorf("option --datasize: %w", err)
		}
		if n < 512*1024 || n >= 0xffffffff {
			return fmt.Errorf("option --datasize: %q must be at least 512 KiB and below 4 GiB", value)
		}
		o.DataSize = uint32(n)
	case "maxsize":
		n, err := parseHumanSize(value)
		if err != nil {
			return fmt.Errorf("option --maxsize: %w", err)
		}
		o.MaxSize = n
	case "admin":
		o.Admin = value
	case "protect":
		o.Protect = true
	case "hook":
		o.Hook = value
	case "background":
		o.Background = true
	case "logfile":
		o.LogFile = value
	case "secure":
		o.Secure = true
	case "rotate":
		o.Rotate, err = strconv.Atoi(value)
		if err != nil || o.Rotate < 0 {
			return fmt.Errorf("option --rotate: invalid value %q", value)
		}
	case "version":
		o.Version = true
	case "help":
		o.Help = true
	}
	return nil
}

// parseHumanSize parses a size with an optional k, M, G or T suffix (powers
// of 1024, case-sensitive) as zdb_human_readable_parse does.
func parseHumanSize(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := uint64(1)
	switch s[len(s)-1] {
	case 'k':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	num := s
	if mult != 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}

const helpText = `Command line arguments:
  Database settings:
    --data       datafile directory (default ./zdb-data)
    --index      indexfile directory (default ./zdb-index)
    --mode       select mode (default user-key):
                  > user:  default user key-value mode
                  > seq:   sequential keys generated
    --datasize   maximum datafile size before split (default 256 MB)
    --rotate     force datafile rotation after <secs> (default: disabled)

  Network options:
    --listen     listen address (default ::)
    --port       listen port (default 9900)
    --socket     unix socket path (override listen and port)
    --dualnet    enable network (listen/port) while socket is set

  Administrative:
    --hook       execute external hook script
    --admin      set admin password
    --maxsize    set default namespace maximum datasize (in bytes)
    --protect    set default namespace protected by admin password

  Persistance and logging:
    --verbose    enable verbose (debug) information
    --dump       only dump index contents (debug)
    --sync       force all write to be sync'd
    --synctime   force sync after <secs> (default: disabled)
    --secure     force sync before jumping to next datafile
    --background run in background when ready
    --logfile    log file (only in daemon mode)

    --version    show version information
    --help       print this message
`

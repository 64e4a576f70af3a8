package zdbfs

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
)

// Defaults of 0-db-fs 0.1.11.
const (
	defaultHost      = "localhost"
	defaultPort      = 9900
	defaultSize      = 10 << 30
	defaultCacheSize = 512 // blocks of 128 KiB (64 MiB), for the whole process
	defaultTempPass  = "hello"
	maxProcs         = 1024

	nsMeta = "zdbfs-meta"
	nsData = "zdbfs-data"
	nsTemp = "zdbfs-temp"
)

// Backend says how to reach one namespace.
type Backend struct {
	Host      string
	Port      int
	Unix      string
	Namespace string
	Password  string
}

// Network returns the dial network and address.
func (b Backend) Network() (string, string) {
	if b.Unix != "" {
		return "unix", b.Unix
	}
	return "tcp", net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
}

// Options is the parsed command line of `qsfs zdbfs`.
type Options struct {
	Mountpoint string
	Meta       Backend
	Data       Backend
	Temp       Backend

	Size      uint64 // bytes reported by statfs; 0 = keep the header's (or the default)
	CacheSize int    // block cache budget in 128 KiB blocks
	Procs     int    // GOMAXPROCS once mounted; 0 = the CPUs plus readerSlack

	Readahead   uint64 // bdi read-ahead in bytes; 0 = the kernel's
	DirtyLimit  uint64 // bdi max_bytes (dirty page cache of the mount); 0 = the kernel's
	NoCache     bool
	NoWriteback bool   // no kernel writeback cache: each write(2) is a WRITE request
	NoPageStore bool   // never hand re-read blocks to the kernel's page cache (read_store.go)
	URing       string // FUSE over io_uring: URingAuto, URingOn or URingOff (uring.go)
	AutoNS      bool
	Backgrnd    bool
	Logfile     string
	Debug       bool

	AllowOther         bool
	AutoUnmount        bool
	ReadOnly           bool
	DefaultPermissions bool
	FuseOptions        []string // other mount options passed to the kernel
	Warnings           []string // accepted but ignored options
}

// writeback reports whether the kernel's writeback cache is used.
func (o *Options) writeback() bool {
	return !o.NoCache && !o.NoWriteback
}

// errHelp asks the caller to print usage.
var errHelp = errors.New("help requested")

// errVersion asks the caller to print the version.
var errVersion = errors.New("version requested")

// passthrough are mount options handed to the kernel as they are.
var passthrough = map[string]bool{
	"nosuid": true, "suid": true, "nodev": true, "dev": true, "noexec": true, "exec": true,
	"noatime": true, "atime": true, "relatime": true, "strictatime": true, "nodiratime": true,
	"rw": false, "allow_root": true,
}

// ParseOptions parses `[-o opt[,opt...]]... <mountpoint>` the way 0-db-fs does.
func ParseOptions(args []string) (*Options, error) {
	o := &Options{
		Meta:      Backend{Host: defaultHost, Port: defaultPort, Namespace: nsMeta},
		Data:      Backend{Host: defaultHost, Port: defaultPort, Namespace: nsData},
		Temp:      Backend{Host: defaultHost, Port: defaultPort, Namespace: nsTemp, Password: defaultTempPass},
		CacheSize: defaultCacheSize,

		Readahead:  defaultReadahead,
		URing:      URingAuto,
		DirtyLimit: defaultDirtyLimit,
	}
	var list []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o":
			if i+1 >= len(args) {
				return nil, errors.New("option -o needs an argument")
			}
			i++
			list = append(list, splitOptions(args[i])...)
		case strings.HasPrefix(a, "-o"):
			list = append(list, splitOptions(a[2:])...)
		case a == "-h" || a == "--help":
			return nil, errHelp
		case a == "-V" || a == "--version":
			return nil, errVersion
		case a == "-f" || a == "-s":
			// foreground is the default; go-fuse is always multi-threaded
		case a == "-d":
			o.Debug = true
		case strings.HasPrefix(a, "-"):
			return nil, fmt.Errorf("unknown argument %q", a)
		default:
			if o.Mountpoint != "" {
				return nil, fmt.Errorf("unexpected argument %q after mountpoint %q", a, o.Mountpoint)
			}
			o.Mountpoint = a
		}
	}
	// global host/port/unix apply first so that per-namespace ones win
	for _, pass := range []bool{true, false} {
		for _, opt := range list {
			k, v, hasValue := strings.Cut(opt, "=")
			global := k == "host" || k == "port" || k == "unix"
			if global != pass {
				continue
			}
			if err := o.apply(k, v, hasValue); err != nil {
				return nil, err
			}
		}
	}
	if o.Mountpoint == "" {
		return nil, errors.New("missing mountpoint")
	}
	if o.AllowOther && !o.DefaultPermissions {
		// other users must not bypass permissions: let the kernel check them
		o.DefaultPermissions = true
	}
	return o, nil
}

func splitOptions(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (o *Options) apply(k, v string, hasValue bool) error {
	needValue := func() error {
		if !hasValue || v == "" {
			return fmt.Errorf("option %q needs a value", k)
		}
		return nil
	}
	port := func(dst ...*Backend) error {
		if err := needValue(); err != nil {
			return err
		}
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("option %q: invalid port %q", k, v)
		}
		for _, b := range dst {
			b.Port = p
		}
		return nil
	}
	str := func(set func(string)) error {
		if err := needValue(); err != nil {
			return err
		}
		set(v)
		return nil
	}
	all := []*Backend{&o.Meta, &o.Data, &o.Temp}
	switch k {
	case "host":
		return str(func(s string) {
			for _, b := range all {
				b.Host = s
			}
		})
	case "port":
		return port(all...)
	case "unix":
		return str(func(s string) {
			for _, b := range all {
				b.Unix = s
			}
		})
	case "mh":
		return str(func(s string) { o.Meta.Host = s })
	case "mp":
		return port(&o.Meta)
	case "mu":
		return str(func(s string) { o.Meta.Unix = s })
	case "ms":
		return str(func(s string) { o.Meta.Password = s })
	case "dh":
		return str(func(s string) { o.Data.Host = s })
	case "dp":
		return port(&o.Data)
	case "du":
		return str(func(s string) { o.Data.Unix = s })
	case "ds":
		return str(func(s string) { o.Data.Password = s })
	case "th":
		return str(func(s string) { o.Temp.Host = s })
	case "tp":
		return port(&o.Temp)
	case "tu":
		return str(func(s string) { o.Temp.Unix = s })
	case "ts":
		return str(func(s string) { o.Temp.Password = s })
	case "mn", "dn", "tn":
		// 0-db-fs 0.1.11 parses these and then always uses the default names
		o.Warnings = append(o.Warnings, fmt.Sprintf("option %q is ignored: namespace names are fixed, as in 0-db-fs 0.1.11", k))
		return nil
	case "size":
		if err := needValue(); err != nil {
			return err
		}
		n, err := parseSize(v)
		if err != nil {
			return fmt.Errorf("option \"size\": invalid size %q", v)
		}
		o.Size = n // 0 keeps the size in the header (10 GiB for a new filesystem)
	case "cachesize":
		if err := needValue(); err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("option \"cachesize\": invalid block count %q", v)
		}
		o.CacheSize = n
	case "procs":
		if err := needValue(); err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxProcs {
			return fmt.Errorf("option \"procs\": invalid count %q (1 to %d)", v, maxProcs)
		}
		o.Procs = n
	case "readahead":
		n, err := sizeOption(k, v, hasValue, maxReadahead)
		if err != nil {
			return err
		}
		if n%4096 != 0 {
			return fmt.Errorf("option \"readahead\": %q is not a multiple of 4 KiB", v)
		}
		o.Readahead = n
	case "dirtylimit":
		n, err := sizeOption(k, v, hasValue, maxDirtyLimit)
		if err != nil {
			return err
		}
		o.DirtyLimit = n
	case "logfile":
		return str(func(s string) { o.Logfile = s })
	case "uring":
		switch v {
		case URingAuto, URingOn, URingOff:
			o.URing = v
		default:
			return fmt.Errorf("option \"uring\": invalid value %q (auto, on or off)", v)
		}
	default:
		if hasValue && k != "fsname" {
			return fmt.Errorf("unknown option %q", k)
		}
		return o.flag(k, v)
	}
	return nil
}

func (o *Options) flag(k, v string) error {
	switch k {
	case "nocache":
		o.NoCache = true
	case "nowriteback":
		o.NoWriteback = true
	case "nopagestore":
		o.NoPageStore = true
	case "autons":
		o.AutoNS = true
	case "background":
		o.Backgrnd = true
	case "debug":
		o.Debug = true
	case "allow_other":
		o.AllowOther = true
	case "auto_unmount":
		o.AutoUnmount = true
	case "ro":
		o.ReadOnly = true
	case "default_permissions":
		o.DefaultPermissions = true
	case "fsname":
		o.FuseOptions = append(o.FuseOptions, "fsname="+v)
	default:
		pass, ok := passthrough[k]
		if !ok {
			return fmt.Errorf("unknown option %q", k)
		}
		if pass {
			o.FuseOptions = append(o.FuseOptions, k)
		}
	}
	return nil
}

// sizeOption parses the byte count of option k, at most limit.
func sizeOption(k, v string, hasValue bool, limit uint64) (uint64, error) {
	if !hasValue || v == "" {
		return 0, fmt.Errorf("option %q needs a value", k)
	}
	n, err := parseSize(v)
	if err != nil {
		return 0, fmt.Errorf("option %q: invalid size %q", k, v)
	}
	if n > limit {
		return 0, fmt.Errorf("option %q: %q is more than %d bytes", k, v, limit)
	}
	return n, nil
}

// parseSize accepts bytes, optionally with a k/M/G/T suffix (powers of 1024).
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "k") || strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	case strings.HasSuffix(s, "T"):
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: %w", s, err)
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("parse size %q: too large", s)
	}
	return n * mult, nil
}

package zdbfs

import (
	"reflect"
	"testing"
)

func TestParseOptions(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(*Options) bool
		err   bool
	}{
		{"defaults", []string{"/mnt"}, func(o *Options) bool {
			n, a := o.Meta.Network()
			return o.Mountpoint == "/mnt" && n == "tcp" && a == "localhost:9900" && o.Temp.Password == "hello" &&
				o.Data.Namespace == "zdbfs-data" && o.Size == 0 && o.CacheSize == defaultCacheSize
		}, false},
		{"comma and repeated -o", []string{"-o", "autons,unix=/run/zdb.sock", "-o", "size=1G", "/m"}, func(o *Options) bool {
			n, a := o.Data.Network()
			return o.AutoNS && n == "unix" && a == "/run/zdb.sock" && o.Temp.Unix == "/run/zdb.sock" && o.Size == 1<<30
		}, false},
		{"per namespace wins over global", []string{"-o", "mp=1,port=2,dh=h,ds=pw,ms=mpw", "/m"}, func(o *Options) bool {
			return o.Meta.Port == 1 && o.Data.Port == 2 && o.Temp.Port == 2 && o.Data.Host == "h" &&
				o.Data.Password == "pw" && o.Meta.Password == "mpw"
		}, false},
		{"temp", []string{"-o", "th=t,tp=7,tu=/s,ts=x", "/m"}, func(o *Options) bool {
			return o.Temp == Backend{Host: "t", Port: 7, Unix: "/s", Namespace: nsTemp, Password: "x"}
		}, false},
		{"fuse options", []string{"-oallow_other,auto_unmount,ro,nosuid", "-f", "/m"}, func(o *Options) bool {
			return o.AllowOther && o.AutoUnmount && o.ReadOnly && o.DefaultPermissions &&
				reflect.DeepEqual(o.FuseOptions, []string{"nosuid"})
		}, false},
		{"cache and log", []string{"-o", "cachesize=64,nocache,background,logfile=/tmp/l", "/m"}, func(o *Options) bool {
			return o.CacheSize == 64 && o.NoCache && o.Backgrnd && o.Logfile == "/tmp/l"
		}, false},
		{"names ignored like official", []string{"-o", "mn=x,dn=y,tn=z", "/m"}, func(o *Options) bool {
			return o.Meta.Namespace == nsMeta && o.Data.Namespace == nsData && o.Temp.Namespace == nsTemp && len(o.Warnings) == 3
		}, false},
		{"procs", []string{"-o", "procs=6", "/m"}, func(o *Options) bool { return o.Procs == 6 }, false},
		{"procs default", []string{"/m"}, func(o *Options) bool { return o.Procs == 0 }, false},
		{"bad procs", []string{"-o", "procs=0", "/m"}, nil, true},
		{"procs too large", []string{"-o", "procs=5000", "/m"}, nil, true},
		{"procs not a number", []string{"-o", "procs=auto", "/m"}, nil, true},
		{"tuning defaults", []string{"/m"}, func(o *Options) bool {
			return o.Readahead == 4<<20 && o.DirtyLimit == 0
		}, false},
		{"readahead and dirtylimit", []string{"-o", "readahead=1M,dirtylimit=256M", "/m"}, func(o *Options) bool {
			return o.Readahead == 1<<20 && o.DirtyLimit == 256<<20
		}, false},
		{"kernel's settings", []string{"-o", "readahead=0,dirtylimit=0", "/m"}, func(o *Options) bool {
			return o.Readahead == 0 && o.DirtyLimit == 0
		}, false},
		{"readahead not in pages", []string{"-o", "readahead=1000", "/m"}, nil, true},
		{"readahead too large", []string{"-o", "readahead=2G", "/m"}, nil, true},
		{"readahead empty", []string{"-o", "readahead=", "/m"}, nil, true},
		{"dirtylimit not a size", []string{"-o", "dirtylimit=lots", "/m"}, nil, true},
		{"dirtylimit overflows", []string{"-o", "dirtylimit=99999999999999999T", "/m"}, nil, true},
		{"dirtylimit flag", []string{"-o", "dirtylimit", "/m"}, nil, true},
		{"nowriteback", []string{"-o", "nowriteback", "/m"}, func(o *Options) bool {
			return o.NoWriteback && !o.NoCache && !o.writeback()
		}, false},
		{"writeback by default", []string{"/m"}, func(o *Options) bool { return o.writeback() }, false},
		{"nocache has no writeback", []string{"-o", "nocache", "/m"}, func(o *Options) bool { return !o.writeback() }, false},
		{"nowriteback takes no value", []string{"-o", "nowriteback=1", "/m"}, nil, true},
		{"nopagestore", []string{"-o", "nopagestore", "/m"}, func(o *Options) bool { return o.NoPageStore }, false},
		{"page store by default", []string{"/m"}, func(o *Options) bool { return !o.NoPageStore }, false},
		{"nopagestore takes no value", []string{"-o", "nopagestore=1", "/m"}, nil, true},
		{"uring auto by default", []string{"/m"}, func(o *Options) bool { return o.URing == URingAuto }, false},
		{"uring=on", []string{"-o", "uring=on", "/m"}, func(o *Options) bool { return o.URing == URingOn }, false},
		{"uring=off", []string{"-o", "uring=off", "/m"}, func(o *Options) bool { return o.URing == URingOff }, false},
		{"uring needs a value", []string{"-o", "uring", "/m"}, nil, true},
		{"uring bad value", []string{"-o", "uring=yes", "/m"}, nil, true},
		{"unknown option", []string{"-o", "bogus", "/m"}, nil, true},
		{"unknown key", []string{"-o", "bogus=1", "/m"}, nil, true},
		{"bad port", []string{"-o", "port=99999", "/m"}, nil, true},
		{"bad size", []string{"-o", "size=abc", "/m"}, nil, true},
		{"bad cachesize", []string{"-o", "cachesize=0", "/m"}, nil, true},
		{"empty value", []string{"-o", "host=", "/m"}, nil, true},
		{"no mountpoint", []string{"-o", "autons"}, nil, true},
		{"two mountpoints", []string{"/a", "/b"}, nil, true},
		{"dangling -o", []string{"/a", "-o"}, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := ParseOptions(c.args)
			if c.err {
				if err == nil {
					t.Fatalf("ParseOptions(%q) succeeded, want an error", c.args)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseOptions(%q): %v", c.args, err)
			}
			if !c.check(o) {
				t.Fatalf("ParseOptions(%q) = %+v", c.args, o)
			}
		})
	}
}

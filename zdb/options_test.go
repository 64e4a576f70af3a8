package zdb

import (
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		args  []string
		check func(o Options) bool
		err   string
	}{
		{nil, func(o Options) bool {
			return o.DataPath == "./zdb-data" && o.IndexPath == "./zdb-index" && o.Listen == "::" && o.Port == 9900 &&
				o.Mode == modeMixed && o.DataSize == 256<<20 && o.Admin == "" && o.Socket == ""
		}, ""},
		{[]string{"-data", "/d", "--index=/i", "-port=1234", "--listen", "127.0.0.1"}, func(o Options) bool {
			return o.DataPath == "/d" && o.IndexPath == "/i" && o.Port == 1234 && o.Listen == "127.0.0.1"
		}, ""},
		{[]string{"--mode", "seq"}, func(o Options) bool { return o.Mode == modeSeq }, ""},
		{[]string{"-mode", "direct"}, func(o Options) bool { return o.Mode == modeSeq }, ""},
		{[]string{"--mode=user"}, func(o Options) bool { return o.Mode == modeUser }, ""},
		{[]string{"--mode", "fast"}, nil, "unknown mode"},
		{[]string{"--datasize", "64M"}, func(o Options) bool { return o.DataSize == 64<<20 }, ""},
		{[]string{"--datasize", "16777216"}, func(o Options) bool { return o.DataSize == 16<<20 }, ""},
		{[]string{"--datasize", "512k"}, func(o Options) bool { return o.DataSize == 512<<10 }, ""},
		{[]string{"--datasize", "100k"}, nil, "at least 512 KiB"},
		{[]string{"--datasize", "4G"}, nil, "below 4 GiB"},
		{[]string{"--datasize", "1m"}, nil, "invalid size"},
		{[]string{"--socket", "/s", "--dualnet", "--sync", "--secure", "--verbose"}, func(o Options) bool {
			return o.Socket == "/s" && o.DualNet && o.Sync && o.Secure && o.Verbose
		}, ""},
		{[]string{"--admin", "pw", "--protect", "--maxsize", "1000", "--hook", "/h", "--rotate", "60", "--synctime", "5"}, func(o Options) bool {
			return o.Admin == "pw" && o.Protect && o.MaxSize == 1000 && o.Hook == "/h" && o.Rotate == 60 && o.SyncTime == 5
		}, ""},
		{[]string{"--protect"}, nil, "requires --admin"},
		{[]string{"--background", "--logfile", "/l"}, func(o Options) bool { return o.Background && o.LogFile == "/l" }, ""},
		{[]string{"--dat", "x"}, nil, "ambiguous"},
		{[]string{"--dual"}, func(o Options) bool { return o.DualNet }, ""},
		{[]string{"--nope"}, nil, "unrecognized option"},
		{[]string{"--port"}, nil, "requires an argument"},
		{[]string{"--port", "99999"}, nil, "invalid port"},
		{[]string{"--sync=1"}, nil, "doesn't allow an argument"},
		{[]string{"--help"}, func(o Options) bool { return o.Help }, ""},
		{[]string{"-version"}, func(o Options) bool { return o.Version }, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := ParseOptions(tt.args)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(o) {
				t.Fatalf("options %+v", o)
			}
		})
	}
}

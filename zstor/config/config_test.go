package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func loadOfficial(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/official.toml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseOfficial(t *testing.T) {
	c, err := Load("testdata/official.toml")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if c.MinimalShards != 2 || c.ExpectedShards != 4 || c.PrometheusPort != 9100 || c.MaxZdbDataDirSize != 25600 {
		t.Errorf("scalars: %+v", c)
	}
	if c.Meta.Config.Prefix != "someprefix" || len(c.Meta.Config.Backends) != 4 {
		t.Errorf("meta: %+v", c.Meta)
	}
	if len(c.Groups) != 2 || len(c.Backends()) != 4 {
		t.Fatalf("groups: %+v", c.Groups)
	}
	g := c.Groups[0].Backends
	if g[1].Namespace == nil || *g[1].Namespace != "" {
		t.Errorf("namespace = \"\" must be set and empty, got %v", g[1].Namespace)
	}
	if c.Groups[1].Backends[0].Namespace != nil || c.Groups[1].Backends[0].Password != nil {
		t.Errorf("absent namespace/password must be nil")
	}
	if c.DisposableShards() != 2 {
		t.Errorf("disposable = %d", c.DisposableShards())
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	c, err := Parse(loadOfficial(t))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("encoded:\n%s", out)
	for _, want := range []string{"minimal_shards = 2", "[meta.config.encryption]", "[[meta.config.backends]]", "[[groups.backends]]", `namespace = ""`, `algorithm = "AES"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("encoded config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "zdbfs_mountpoint") {
		t.Errorf("unset optional keys must be omitted:\n%s", out)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("parse encoded: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, back) {
		t.Errorf("round trip differs:\n%+v\n%+v", c, back)
	}
}

func TestParseRejects(t *testing.T) {
	base := string(loadOfficial(t))
	cases := []struct {
		name, edit, wantKey string
	}{
		{"unknown top-level key", "unknown_key = 1\n" + base, "unknown_key"},
		{"unknown key in backend", strings.Replace(base, `address = "10.0.0.5:9900"`, "address = \"10.0.0.5:9900\"\nport = 1", 1), "groups.backends.port"},
		{"unknown key in encryption", strings.Replace(base, "[compression]", "mode = \"gcm\"\n[compression]", 1), "encryption.mode"},
		{"old data_shards key", strings.Replace(base, "minimal_shards = 2", "data_shards = 2", 1), "data_shards"},
		{"wrong type", strings.Replace(base, "minimal_shards = 2", `minimal_shards = "2"`, 1), "minimal_shards"},
		{"missing required", strings.Replace(base, "redundant_nodes = 0\n", "", 1), "redundant_nodes"},
		{"missing compression", strings.Replace(base, "[compression]\nalgorithm = \"snappy\"\n", "", 1), "compression"},
		{"malformed toml", base + "\n[[groups\n", "line"},
		{"port out of range", strings.Replace(base, "prometheus_port = 9100", "prometheus_port = 99999", 1), "prometheus_port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.edit))
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Errorf("error %q does not name %q", err, tc.wantKey)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(c *Config)
		wantKey string // "" = valid
	}{
		{"official", func(c *Config) {}, ""},
		{"three meta backends", func(c *Config) { c.Meta.Config.Backends = c.Meta.Config.Backends[:3] }, "meta.config.backends"},
		{"host name", func(c *Config) { c.Groups[1].Backends[0].Address = "zdb.example:9900" }, "groups[1].backends[0].address"},
		{"no port", func(c *Config) { c.Meta.Config.Backends[2].Address = "10.0.0.3" }, "meta.config.backends[2].address"},
		{"unbracketed ipv6", func(c *Config) { c.Groups[0].Backends[0].Address = "fe80::1:9900" }, "groups[0].backends[0].address"},
		{"too few backends", func(c *Config) { c.ExpectedShards = 5 }, "insufficient data backends"},
		{"minimal above expected", func(c *Config) { c.MinimalShards = 5 }, "expected_shards"},
		{"zero minimal", func(c *Config) { c.MinimalShards = 0 }, "minimal_shards"},
		{"short key", func(c *Config) { c.Encryption.Key = "00" }, "encryption.key"},
		{"non-hex key", func(c *Config) { c.Encryption.Key = strings.Repeat("zz", 32) }, "encryption.key"},
		{"lower-case aes", func(c *Config) { c.Encryption.Algorithm = "aes" }, "encryption.algorithm"},
		{"meta key", func(c *Config) { c.Meta.Config.Encryption.Key = "" }, "meta.config.encryption.key"},
		{"compression tag", func(c *Config) { c.Compression.Algorithm = "Snappy" }, "compression.algorithm"},
		{"meta type", func(c *Config) { c.Meta.Type = "etcd" }, "meta.type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(loadOfficial(t))
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(c)
			err = c.Validate()
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Errorf("error %q does not name %q", err, tc.wantKey)
			}
		})
	}
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"10.0.0.1:9900", true}, {"[2a02::1]:9900", true}, {"[fe80::1%2]:9900", true},
		{"localhost:9900", false}, {"10.0.0.1", false}, {"[fe80::1%eth0]:9900", false}, {"/tmp/zdb.sock", false},
	} {
		_, err := ParseAddress(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseAddress(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

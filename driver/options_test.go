package driver

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func archivedOpts() map[string]string {
	return map[string]string{
		"groups":          "10.0.0.1:9900/d1/pw,10.0.0.2:9900/d2;[2a02::1]:9900/d3,10.0.0.4/d4",
		"meta":            "10.0.1.1:9900/m1,10.0.1.2:9900/m2,10.0.1.3:9900/m3,10.0.1.4:9900/m4",
		"minimal_shards":  "2",
		"expected_shards": "4",
		"encryption_key":  testKey,
	}
}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = kv[i+1]
	}
	return out
}

const zstorDoc = `minimal_shards = 1
expected_shards = 2
redundant_groups = 0
redundant_nodes = 0
[encryption]
algorithm = "AES"
key = "` + testKey + `"
[compression]
algorithm = "snappy"
[meta]
type = "zdb"
[meta.config]
prefix = "docprefix"
[meta.config.encryption]
algorithm = "AES"
key = "` + testKey + `"
[[meta.config.backends]]
address = "10.1.0.1:9900"
[[meta.config.backends]]
address = "10.1.0.2:9900"
[[meta.config.backends]]
address = "10.1.0.3:9900"
[[meta.config.backends]]
address = "10.1.0.4:9900"
[[groups]]
[[groups.backends]]
address = "10.2.0.1:9900"
namespace = "a"
password = "secret"
[[groups.backends]]
address = "10.2.0.2:9900"
`

func TestParseOptions(t *testing.T) {
	secrets := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(secrets, "key"), []byte(testKey+"\n"), 0o600))
	must(os.WriteFile(filepath.Join(secrets, "pw"), []byte("filepw\n"), 0o600))
	must(os.WriteFile(filepath.Join(secrets, "doc.toml"), []byte(zstorDoc), 0o600))

	tests := []struct {
		name     string
		defaults map[string]string
		opts     map[string]string
		check    func(t *testing.T, s *Spec)
		errKey   string // expected OptionError key; "" = success
	}{
		{name: "empty is a local volume", opts: nil, check: func(t *testing.T, s *Spec) {
			if s.Archived() || s.Cache != DefaultCache || time.Duration(s.Rotate) != DefaultRotate {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "cache size", opts: map[string]string{"cache": "2G"}, check: func(t *testing.T, s *Spec) {
			if s.Cache != 2<<30 {
				t.Errorf("cache %d", s.Cache)
			}
		}},
		{name: "normalised keys", opts: map[string]string{"CACHE": "5M", "Rotate": "30"}, check: func(t *testing.T, s *Spec) {
			if s.Cache != 5<<20 || time.Duration(s.Rotate) != 30*time.Second {
				t.Errorf("got cache %d rotate %v", s.Cache, time.Duration(s.Rotate))
			}
		}},
		{name: "archived compact syntax", opts: archivedOpts(), check: func(t *testing.T, s *Spec) {
			if len(s.Groups) != 2 || len(s.Groups[0]) != 2 || len(s.Groups[1]) != 2 {
				t.Fatalf("groups %+v", s.Groups)
			}
			if b := s.Groups[0][0]; b.Address != "10.0.0.1:9900" || b.Namespace != "d1" || b.Password != "pw" {
				t.Errorf("backend %+v", b)
			}
			if b := s.Groups[1][0]; b.Address != "[2a02::1]:9900" || b.Namespace != "d3" {
				t.Errorf("ipv6 backend %+v", b)
			}
			if b := s.Groups[1][1]; b.Address != "10.0.0.4:9900" {
				t.Errorf("default port backend %+v", b)
			}
			if s.Meta.Encryption.Key != testKey {
				t.Errorf("meta key not defaulted to encryption key")
			}
		}},
		{name: "dashes and case", opts: with(archivedOpts(), "minimal_shards", "<delete>", "Minimal-Shards", "3"), check: func(t *testing.T, s *Spec) {
			if s.MinimalShards != 3 {
				t.Errorf("minimal %d", s.MinimalShards)
			}
		}},
		{name: "numbered groups", opts: with(archivedOpts(), "groups", "<delete>", "group2", "10.0.0.3:9900/b", "group1", "10.0.0.1:9900/a,10.0.0.2:9900/a2,10.0.0.5:9900"), check: func(t *testing.T, s *Spec) {
			if len(s.Groups) != 2 || s.Groups[0][0].Namespace != "a" || s.Groups[1][0].Namespace != "b" {
				t.Errorf("groups %+v", s.Groups)
			}
		}},
		{name: "key_file and password_file", opts: with(archivedOpts(), "encryption_key", "<delete>", "key_file", "key", "password_file", "pw"), check: func(t *testing.T, s *Spec) {
			if s.Encryption.Key != testKey {
				t.Errorf("key from file not read")
			}
			if s.Groups[0][0].Password != "pw" || s.Groups[0][1].Password != "filepw" || s.Meta.Backends[0].Password != "filepw" {
				t.Errorf("passwords %+v %+v", s.Groups[0], s.Meta.Backends[0])
			}
		}},
		{name: "whole toml document", opts: map[string]string{"config": zstorDoc}, check: func(t *testing.T, s *Spec) {
			if s.MinimalShards != 1 || s.Meta.Prefix != "docprefix" || s.Groups[0][0].Password != "secret" {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "base64 toml document", opts: map[string]string{"config": base64.StdEncoding.EncodeToString([]byte(zstorDoc))}, check: func(t *testing.T, s *Spec) {
			if s.ExpectedShards != 2 {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "document from secrets with key override", opts: map[string]string{"config_file": "doc.toml", "expected_shards": "1"}, check: func(t *testing.T, s *Spec) {
			if s.ExpectedShards != 1 || s.MinimalShards != 1 {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "plugin defaults", defaults: archivedOpts(), opts: nil, check: func(t *testing.T, s *Spec) {
			if !s.Archived() {
				t.Errorf("defaults not applied")
			}
		}},
		{name: "user overrides defaults", defaults: archivedOpts(), opts: map[string]string{"expected_shards": "3"}, check: func(t *testing.T, s *Spec) {
			if s.ExpectedShards != 3 {
				t.Errorf("expected %d", s.ExpectedShards)
			}
		}},
		{name: "unknown key", opts: map[string]string{"colour": "blue"}, errKey: "colour"},
		{name: "podman o key", opts: map[string]string{"o": "uid=1"}, errKey: "o"},
		{name: "bad size", opts: map[string]string{"cache": "lots"}, errKey: "cache"},
		{name: "zero cache", opts: map[string]string{"cache": "0"}, errKey: "cache"},
		{name: "bad rotate", opts: map[string]string{"rotate": "soon"}, errKey: "rotate"},
		{name: "bad number", opts: with(archivedOpts(), "minimal_shards", "two"), errKey: "minimal_shards"},
		{name: "expected below minimal", opts: with(archivedOpts(), "minimal_shards", "5"), errKey: "expected_shards"},
		{name: "too few backends", opts: with(archivedOpts(), "expected_shards", "9", "minimal_shards", "2"), errKey: "groups"},
		{name: "missing shards", opts: with(archivedOpts(), "minimal_shards", "<delete>"), errKey: "minimal_shards"},
		{name: "missing key", opts: with(archivedOpts(), "encryption_key", "<delete>"), errKey: "encryption_key"},
		{name: "short key", opts: with(archivedOpts(), "encryption_key", "abcd"), errKey: "encryption_key"},
		{name: "three meta backends", opts: with(archivedOpts(), "meta", "10.0.1.1:9900,10.0.1.2:9900,10.0.1.3:9900"), errKey: "meta"},
		{name: "host name backend", opts: with(archivedOpts(), "groups", "zdb.example.com:9900/x,10.0.0.2:9900,10.0.0.3:9900,10.0.0.4:9900"), errKey: "groups"},
		{name: "bad port", opts: with(archivedOpts(), "groups", "10.0.0.1:99999,10.0.0.2:9900,10.0.0.3:9900,10.0.0.4:9900"), errKey: "groups"},
		{name: "empty group", opts: with(archivedOpts(), "groups", ";10.0.0.1:9900"), errKey: "groups"},
		{name: "meta without groups", opts: map[string]string{"meta": archivedOpts()["meta"]}, errKey: "groups"},
		{name: "groups and group1", opts: with(archivedOpts(), "group1", "10.0.0.9:9900"), errKey: "groups"},
		{name: "compression", opts: with(archivedOpts(), "compression", "gzip"), errKey: "compression"},
		{name: "algorithm", opts: with(archivedOpts(), "encryption_algorithm", "DES"), errKey: "encryption_algorithm"},
		{name: "meta type", opts: map[string]string{"meta_type": "etcd"}, errKey: "meta_type"},
		{name: "secret path escape", opts: map[string]string{"key_file": "../etc/shadow"}, errKey: "key_file"},
		{name: "missing secret", opts: map[string]string{"key_file": "nope"}, errKey: "key_file"},
		{name: "bad document", opts: map[string]string{"config": "minimal_shards = 1\nbogus = 2\n"}, errKey: "config"},
		{name: "key and encryption_key", opts: with(archivedOpts(), "key", testKey), errKey: "key"},
		{name: "bad default", defaults: map[string]string{"bogus": "1"}, errKey: "bogus"},
		{name: "group0 is not a key", opts: map[string]string{"group0": "10.0.0.1:9900"}, errKey: "group0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Parser{Defaults: tc.defaults, SecretsDir: secrets}
			s, err := p.Parse(tc.opts)
			if tc.errKey != "" {
				var oe *OptionError
				if !errors.As(err, &oe) {
					t.Fatalf("want OptionError for %q, got %v", tc.errKey, err)
				}
				if oe.Key != tc.errKey {
					t.Fatalf("error names %q, want %q: %v", oe.Key, tc.errKey, err)
				}
				if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), "filepw") {
					t.Fatalf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tc.check(t, s)
		})
	}
}

func TestZstorConfigFromSpec(t *testing.T) {
	s, err := (&Parser{}).Parse(archivedOpts())
	if err != nil {
		t.Fatal(err)
	}
	c := s.Zstor(Runtime{Prefix: "qsfs-x", Socket: "/s", ZdbDataDirPath: "/d", PrometheusPort: 9100})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Meta.Config.Prefix != "qsfs-x" || c.MaxZdbDataDirSize != DefaultCache>>20 || c.Socket != "/s" {
		t.Errorf("runtime fields: %+v", c)
	}
	if c.Groups[0].Backends[0].PasswordValue() != "pw" || c.Groups[0].Backends[1].Password != nil {
		t.Errorf("passwords: %+v", c.Groups[0].Backends)
	}
	text, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), `prometheus_port = 9100`) {
		t.Errorf("encoded:\n%s", text)
	}
	pub := s.Public()
	for _, v := range pub {
		if strings.Contains(v.(string), "pw") || strings.Contains(v.(string), testKey) {
			t.Errorf("public view leaks a secret: %v", pub)
		}
	}
}

func TestUpdateSpec(t *testing.T) {
	p := &Parser{}
	s, err := p.Parse(archivedOpts())
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.Update(s, map[string]string{"groups": "10.9.0.1:9900,10.9.0.2:9900,10.9.0.3:9900,10.9.0.4:9900"})
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Groups) != 1 || u.Groups[0][0].Address != "10.9.0.1:9900" || u.MinimalShards != 2 {
		t.Errorf("update: %+v", u)
	}
	if len(s.Groups) != 2 {
		t.Errorf("update changed the base spec")
	}
	if _, err := p.Update(s, map[string]string{"expected_shards": "1"}); err == nil {
		t.Errorf("invalid update accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"1": 1, "1K": 1024, "2M": 2 << 20, "3G": 3 << 30, "1T": 1 << 40, "4GiB": 4 << 30, "5Gi": 5 << 30, "10gb": 10 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "1X", "99999999999999999999"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestUploadStats(t *testing.T) {
	text := "# TYPE zstor_queue_length gauge\nzstor_queue_length 3\nzstor_failed_uploads{x=\"y\"} 2\nzstor_queue_length_other 9\n"
	got := uploadStats(text)
	if got["pending"] != 3 || got["failed"] != 2 {
		t.Errorf("uploadStats = %v", got)
	}
}

// Package config is the 0-stor v2 TOML configuration as Go types: parsing
// (unknown keys rejected, as the official zstor's deny_unknown_fields does),
// validation with errors that name the key and the fix, and encoding back to
// the official format.
//
// It owns only the file format. It does not own placement, connections or
// the pipeline (see the other zstor packages). The plugin imports it to
// write each volume's zstor.toml; its API is kept small and stable: Config
// and its nested types, Load, Parse, Config.Validate and Config.Encode, plus
// a few read-only helpers. New fields are only added when the official
// format gains them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the whole zstor configuration file (zstor/src/config.rs).
// Optional scalar keys use their zero value for "not set".
type Config struct {
	MinimalShards   int `toml:"minimal_shards"`
	ExpectedShards  int `toml:"expected_shards"`
	RedundantGroups int `toml:"redundant_groups"`
	RedundantNodes  int `toml:"redundant_nodes"`

	Root              string `toml:"root,omitempty"`
	Socket            string `toml:"socket,omitempty"`
	PidFile           string `toml:"pid_file,omitempty"`
	ZdbDataDirPath    string `toml:"zdb_data_dir_path,omitempty"`
	MaxZdbDataDirSize uint64 `toml:"max_zdb_data_dir_size,omitzero"` // MiB
	ZdbfsMountpoint   string `toml:"zdbfs_mountpoint,omitempty"`
	PrometheusPort    uint16 `toml:"prometheus_port,omitzero"`

	Encryption  Encryption  `toml:"encryption"`
	Compression Compression `toml:"compression"`
	Meta        Meta        `toml:"meta"`
	Groups      []Group     `toml:"groups"`
}

// Encryption is an [encryption] table. Algorithm must be "AES"; Key is the
// 32-byte AES-256 key as 64 hex characters.
type Encryption struct {
	Algorithm string `toml:"algorithm"`
	Key       string `toml:"key"`
}

// Compression is the [compression] table. Algorithm must be "snappy".
type Compression struct {
	Algorithm string `toml:"algorithm"`
}

// Meta is the [meta] table. Type must be "zdb".
type Meta struct {
	Type   string     `toml:"type"`
	Config MetaConfig `toml:"config"`
}

// MetaConfig is [meta.config]: the key prefix, an encryption table (required
// by the format; the official zstor encrypts metadata with the top-level key,
// so write the same key in both) and exactly 4 user-key backends.
type MetaConfig struct {
	Prefix     string     `toml:"prefix"`
	Encryption Encryption `toml:"encryption"`
	Backends   []Backend  `toml:"backends"`
}

// Group is one [[groups]] entry: backends that are physically close.
type Group struct {
	Backends []Backend `toml:"backends"`
}

// Backend is a 0-db namespace. Address is an IP literal with port
// ("10.0.0.1:9900", "[2a02::1]:9900"). A nil Namespace means "no SELECT"
// (the server's default namespace); a pointer to "" is distinct from nil, as
// in the official Option<String>.
type Backend struct {
	Address   string  `toml:"address"`
	Namespace *string `toml:"namespace,omitempty"`
	Password  *string `toml:"password,omitempty"`
}

// String returns a pointer to s, for Backend.Namespace and Backend.Password.
func String(s string) *string { return &s }

// NamespaceName returns the namespace or "" when none is set.
func (b Backend) NamespaceName() string {
	if b.Namespace == nil {
		return ""
	}
	return *b.Namespace
}

// PasswordValue returns the password or "" when none is set.
func (b Backend) PasswordValue() string {
	if b.Password == nil {
		return ""
	}
	return *b.Password
}

// DataShards is minimal_shards.
func (c *Config) DataShards() int { return c.MinimalShards }

// DisposableShards is expected_shards - minimal_shards.
func (c *Config) DisposableShards() int { return c.ExpectedShards - c.MinimalShards }

// Backends returns every data backend of every group, in order.
func (c *Config) Backends() []Backend {
	var all []Backend
	for _, g := range c.Groups {
		all = append(all, g.Backends...)
	}
	return all
}

// Load reads and parses the file at path. It does not validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read zstor config %s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("zstor config %s: %w", path, err)
	}
	return c, nil
}

// required lists the keys the official schema requires.
var required = [][]string{
	{"minimal_shards"}, {"expected_shards"}, {"redundant_groups"}, {"redundant_nodes"},
	{"encryption"}, {"encryption", "algorithm"}, {"encryption", "key"},
	{"compression"}, {"compression", "algorithm"},
	{"meta"}, {"meta", "type"}, {"meta", "config"}, {"meta", "config", "prefix"},
	{"meta", "config", "encryption"}, {"meta", "config", "encryption", "algorithm"},
	{"meta", "config", "encryption", "key"}, {"meta", "config", "backends"},
	{"groups"},
}

// Parse decodes TOML text. Unknown keys, missing required keys and values of
// the wrong type are errors naming the key. It does not validate.
func Parse(data []byte) (*Config, error) {
	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return nil, fmt.Errorf("parse toml: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %q: remove it (known keys are those of 0-stor v2)", strings.Join(keys, `", "`))
	}
	for _, k := range required {
		if !md.IsDefined(k...) {
			return nil, fmt.Errorf("missing required key %q", strings.Join(k, "."))
		}
	}
	for gi, g := range c.Groups {
		for bi, b := range g.Backends {
			if b.Address == "" {
				return nil, fmt.Errorf("missing required key \"groups[%d].backends[%d].address\"", gi, bi)
			}
		}
	}
	for bi, b := range c.Meta.Config.Backends {
		if b.Address == "" {
			return nil, fmt.Errorf("missing required key \"meta.config.backends[%d].address\"", bi)
		}
	}
	return &c, nil
}

// Encode returns the configuration as TOML in the official layout.
func (c *Config) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode zstor config: %w", err)
	}
	return buf.Bytes(), nil
}

// errList collects validation errors.
type errList []error

func (e *errList) add(format string, args ...any) { *e = append(*e, fmt.Errorf(format, args...)) }

func (e errList) err() error { return errors.Join(e...) }

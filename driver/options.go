package driver

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	zcfg "github.com/qsfs/qsfs/zstor/config"
)

// Spec is one volume's QuantumSafeFS: the cache size plus the whole
// QuantumSafeFSConfig (shards, groups, redundancy, encryption, compression,
// metadata), as validated by Create and persisted. A Spec without groups is a
// local-only volume: zdb and zdbfs run, zstor does not.
type Spec struct {
	Cache             uint64      `json:"cache"`                 // bytes
	MaxZdbDataDirSize uint64      `json:"max_zdb_data_dir_size"` // MiB, 0 = cache
	Rotate            Duration    `json:"rotate"`                // zdb --rotate
	MinimalShards     int         `json:"minimal_shards"`        // data shards
	ExpectedShards    int         `json:"expected_shards"`       // data + parity shards
	RedundantGroups   int         `json:"redundant_groups"`      // groups that may be lost
	RedundantNodes    int         `json:"redundant_nodes"`       // nodes per group that may be lost
	Encryption        Encryption  `json:"encryption"`            // data (and metadata) key
	Compression       string      `json:"compression"`           // "snappy"
	Meta              MetaSpec    `json:"meta"`                  // metadata store
	Groups            [][]Backend `json:"groups,omitempty"`      // data backends per group
}

// Encryption is an algorithm and a 64 hex character key.
type Encryption struct {
	Algorithm string `json:"algorithm"`
	Key       string `json:"key"`
}

// MetaSpec is the zdb metadata store: exactly 4 backends when set.
type MetaSpec struct {
	Prefix     string     `json:"prefix"`
	Encryption Encryption `json:"encryption"`
	Backends   []Backend  `json:"backends,omitempty"`
}

// Backend is one 0-db namespace: an IP literal with port, a namespace and a
// password (both optional).
type Backend struct {
	Address   string `json:"address"`
	Namespace string `json:"namespace,omitempty"`
	Password  string `json:"password,omitempty"`
}

// Duration is a time.Duration persisted as a Go duration string.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Archived reports whether the volume has remote backends (zstor runs).
func (s *Spec) Archived() bool { return len(s.Groups) > 0 }

// Default values of a volume's options when neither -o nor the plugin-wide
// defaults set them.
const (
	DefaultCache       = 10 << 30
	DefaultRotate      = 10 * time.Minute
	DefaultAlgorithm   = "AES"
	DefaultCompression = "snappy"
	maxGroupKey        = 64
)

// optionKeys is the allowlist of volume options (normalised: lower case,
// '-' written as '_'), with a one-line description used in errors and in
// docs/options.md.
var optionKeys = map[string]string{
	"cache":                     "local disk bound, a size such as 10G",
	"max_zdb_data_dir_size":     "zstor's local data limit in MiB (default: cache)",
	"rotate":                    "zdb --rotate interval, a duration such as 10m (0 disables)",
	"minimal_shards":            "data shards, 1..255",
	"expected_shards":           "data + parity shards, >= minimal_shards",
	"redundant_groups":          "groups that may be lost",
	"redundant_nodes":           "backends per group that may be lost",
	"encryption_key":            "64 hex characters",
	"key":                       "alias of encryption_key",
	"key_file":                  "name of a file in the secrets directory holding encryption_key",
	"encryption_algorithm":      "AES",
	"compression":               "snappy",
	"compression_algorithm":     "alias of compression",
	"meta":                      "4 metadata backends, comma separated",
	"meta_type":                 "zdb",
	"meta_prefix":               "metadata key prefix",
	"meta_encryption_key":       "64 hex characters (default: encryption_key)",
	"meta_key_file":             "secrets file holding meta_encryption_key",
	"meta_encryption_algorithm": "AES",
	"groups":                    "groups of backends: ';' between groups, ',' between backends",
	"group<N>":                  "one group of backends, ',' separated (group1, group2, ...)",
	"password":                  "password for backends that give none",
	"password_file":             "secrets file holding password",
	"config":                    "a whole zstor TOML document, plain or base64",
	"config_file":               "secrets file holding a whole zstor TOML document",
}

// OptionKeys returns the allowlisted option names, sorted.
func OptionKeys() []string {
	keys := make([]string, 0, len(optionKeys))
	for k := range optionKeys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// NormalizeKey lower-cases key, trims leading dashes and writes '-' as '_'.
func NormalizeKey(key string) string {
	k := strings.ToLower(strings.TrimSpace(key))
	k = strings.TrimLeft(k, "-")
	return strings.ReplaceAll(k, "-", "_")
}

// groupIndex returns N for a "group<N>" key.
func groupIndex(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, "group")
	if !ok || rest == "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || n > maxGroupKey || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}

// OptionError is an invalid or unknown volume option.
type OptionError struct {
	Key string // normalised key
	Msg string // what is wrong and how to fix it
}

func (e *OptionError) Error() string { return fmt.Sprintf("option %q: %s", e.Key, e.Msg) }

func optErr(key, format string, args ...any) error {
	return &OptionError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Parser turns -o options into a validated Spec. Defaults are the
// plugin-wide options (same keys), applied under the user's.
type Parser struct {
	Defaults   map[string]string
	SecretsDir string
}

// normalize checks every key against the allowlist and returns the map with
// normalised keys. origin names the layer for errors.
func normalize(opts map[string]string, origin string) (map[string]string, error) {
	out := make(map[string]string, len(opts))
	for k, v := range opts {
		nk := NormalizeKey(k)
		if _, ok := optionKeys[nk]; !ok {
			if _, ok := groupIndex(nk); !ok {
				return nil, optErr(nk, "unknown %s: remove it; known options are %s", origin, strings.Join(OptionKeys(), ", "))
			}
		}
		if _, dup := out[nk]; dup {
			return nil, optErr(nk, "given twice (keys are case-insensitive and '-' equals '_'): give it once")
		}
		out[nk] = strings.TrimSpace(v)
	}
	return out, nil
}

// Parse applies the defaults, then opts, validates the result and returns
// it. Nothing is written. Volume-level values replace default ones key by
// key; "groups"/"group<N>" replace the default groups as a whole.
func (p *Parser) Parse(opts map[string]string) (*Spec, error) {
	defs, err := normalize(p.Defaults, "plugin default (QSFS_OPT_*)")
	if err != nil {
		return nil, err
	}
	user, err := normalize(opts, "option")
	if err != nil {
		return nil, err
	}
	s := &Spec{
		Cache:       DefaultCache,
		Rotate:      Duration(DefaultRotate),
		Encryption:  Encryption{Algorithm: DefaultAlgorithm},
		Compression: DefaultCompression,
		Meta:        MetaSpec{Encryption: Encryption{Algorithm: DefaultAlgorithm}},
	}
	var metaKeySet bool
	for _, layer := range []map[string]string{defs, user} {
		set, err := p.apply(s, layer)
		if err != nil {
			return nil, err
		}
		metaKeySet = metaKeySet || set
	}
	if !metaKeySet && s.Meta.Encryption.Key == "" {
		s.Meta.Encryption.Key = s.Encryption.Key
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// apply sets the layer's keys on s. A whole document (config, config_file)
// is applied first, then the single keys. It reports whether the layer set
// the metadata key explicitly.
func (p *Parser) apply(s *Spec, layer map[string]string) (bool, error) {
	if len(layer) == 0 {
		return false, nil
	}
	if _, ok := layer["config"]; ok {
		if _, ok2 := layer["config_file"]; ok2 {
			return false, optErr("config", "given together with config_file: give one of them")
		}
	}
	for _, k := range []string{"config", "config_file"} {
		v, ok := layer[k]
		if !ok {
			continue
		}
		var doc []byte
		if k == "config" {
			doc = decodeDocument(v)
		} else {
			b, err := p.readSecret(k, v)
			if err != nil {
				return false, err
			}
			doc = []byte(b)
		}
		c, err := zcfg.Parse(doc)
		if err != nil {
			return false, optErr(k, "%v: give a 0-stor v2 TOML document (plain or base64)", err)
		}
		s.setZstor(c)
	}
	metaKeySet := false
	password := ""
	passwordSet := false
	var numbered []int
	for k, v := range layer {
		if n, ok := groupIndex(k); ok {
			numbered = append(numbered, n)
			continue
		}
		switch k {
		case "config", "config_file":
		case "cache":
			n, err := ParseSize(v)
			if err != nil || n == 0 {
				return false, optErr(k, "%q is not a size: write a number of bytes with an optional K, M, G or T suffix, e.g. cache=10G", v)
			}
			s.Cache = n
		case "max_zdb_data_dir_size":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				b, err2 := ParseSize(v)
				if err2 != nil || !strings.ContainsAny(v, "KMGTkmgt") {
					return false, optErr(k, "%q is not a number of MiB: write e.g. max_zdb_data_dir_size=2048 or 2G", v)
				}
				n = b >> 20
			}
			s.MaxZdbDataDirSize = n
		case "rotate":
			d, err := parseDuration(v)
			if err != nil || d < 0 {
				return false, optErr(k, "%q is not a duration: write e.g. rotate=10m, rotate=600 (seconds) or rotate=0 to disable", v)
			}
			s.Rotate = Duration(d)
		case "minimal_shards", "expected_shards", "redundant_groups", "redundant_nodes":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return false, optErr(k, "%q is not a non-negative integer: write e.g. %s=2", v, k)
			}
			switch k {
			case "minimal_shards":
				s.MinimalShards = n
			case "expected_shards":
				s.ExpectedShards = n
			case "redundant_groups":
				s.RedundantGroups = n
			default:
				s.RedundantNodes = n
			}
		case "encryption_key", "key":
			s.Encryption.Key = strings.ToLower(v)
		case "key_file":
			b, err := p.readSecret(k, v)
			if err != nil {
				return false, err
			}
			s.Encryption.Key = strings.ToLower(strings.TrimSpace(b))
		case "encryption_algorithm":
			s.Encryption.Algorithm = v
		case "compression", "compression_algorithm":
			s.Compression = v
		case "meta":
			bs, err := ParseBackends(v)
			if err != nil {
				return false, optErr(k, "%v", err)
			}
			s.Meta.Backends = bs
		case "meta_type":
			if v != "zdb" {
				return false, optErr(k, "%q is not supported: set meta_type=zdb or leave it out", v)
			}
		case "meta_prefix":
			s.Meta.Prefix = v
		case "meta_encryption_key":
			s.Meta.Encryption.Key = strings.ToLower(v)
			metaKeySet = true
		case "meta_key_file":
			b, err := p.readSecret(k, v)
			if err != nil {
				return false, err
			}
			s.Meta.Encryption.Key = strings.ToLower(strings.TrimSpace(b))
			metaKeySet = true
		case "meta_encryption_algorithm":
			s.Meta.Encryption.Algorithm = v
		case "groups":
			gs, err := ParseGroups(v)
			if err != nil {
				return false, optErr(k, "%v", err)
			}
			s.Groups = gs
		case "password":
			password, passwordSet = v, true
		case "password_file":
			b, err := p.readSecret(k, v)
			if err != nil {
				return false, err
			}
			password, passwordSet = strings.TrimRight(b, "\r\n"), true
		}
	}
	if _, ok := layer["key"]; ok {
		if _, ok2 := layer["encryption_key"]; ok2 {
			return false, optErr("key", "given together with encryption_key: give one of them")
		}
	}
	if _, ok := layer["password"]; ok {
		if _, ok2 := layer["password_file"]; ok2 {
			return false, optErr("password", "given together with password_file: give one of them")
		}
	}
	if len(numbered) > 0 {
		if _, ok := layer["groups"]; ok {
			return false, optErr("groups", "given together with group<N> keys: use either groups=... or group1=..., group2=...")
		}
		sort.Ints(numbered)
		s.Groups = nil
		for _, n := range numbered {
			k := "group" + strconv.Itoa(n)
			bs, err := ParseBackends(layer[k])
			if err != nil {
				return false, optErr(k, "%v", err)
			}
			s.Groups = append(s.Groups, bs)
		}
	}
	if passwordSet {
		for gi := range s.Groups {
			for bi := range s.Groups[gi] {
				if s.Groups[gi][bi].Password == "" {
					s.Groups[gi][bi].Password = password
				}
			}
		}
		for bi := range s.Meta.Backends {
			if s.Meta.Backends[bi].Password == "" {
				s.Meta.Backends[bi].Password = password
			}
		}
	}
	return metaKeySet, nil
}

// decodeDocument returns v itself when it looks like TOML, else its base64
// decoding (standard or URL alphabet, padded or not), else v.
func decodeDocument(v string) []byte {
	if strings.ContainsAny(v, "=\n[") && !isBase64(v) {
		return []byte(v)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(strings.TrimSpace(v)); err == nil {
			return b
		}
	}
	return []byte(v)
}

func isBase64(v string) bool {
	v = strings.TrimRight(strings.TrimSpace(v), "=")
	if v == "" {
		return false
	}
	return strings.Trim(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_") == ""
}

// readSecret reads the file name from the secrets directory. Only a plain
// file name is accepted, so an option cannot read outside that directory.
func (p *Parser) readSecret(key, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return "", optErr(key, "%q is not a file name: give the name of a file in the plugin's secrets directory (no '/')", name)
	}
	if p.SecretsDir == "" {
		return "", optErr(key, "no secrets directory is configured: set QSFS_SECRETS_DIR or give the value directly")
	}
	b, err := os.ReadFile(filepath.Join(p.SecretsDir, name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", optErr(key, "file %q does not exist in the secrets directory %s: create it (mode 0600) or fix the name", name, p.SecretsDir)
		}
		return "", optErr(key, "read secrets file %q: %v", name, err)
	}
	return string(b), nil
}

// setZstor copies a parsed zstor document onto s.
func (s *Spec) setZstor(c *zcfg.Config) {
	s.MinimalShards = c.MinimalShards
	s.ExpectedShards = c.ExpectedShards
	s.RedundantGroups = c.RedundantGroups
	s.RedundantNodes = c.RedundantNodes
	if c.MaxZdbDataDirSize != 0 {
		s.MaxZdbDataDirSize = c.MaxZdbDataDirSize
	}
	s.Encryption = Encryption{Algorithm: c.Encryption.Algorithm, Key: strings.ToLower(c.Encryption.Key)}
	s.Compression = c.Compression.Algorithm
	s.Meta = MetaSpec{
		Prefix:     c.Meta.Config.Prefix,
		Encryption: Encryption{Algorithm: c.Meta.Config.Encryption.Algorithm, Key: strings.ToLower(c.Meta.Config.Encryption.Key)},
		Backends:   fromZstorBackends(c.Meta.Config.Backends),
	}
	s.Groups = nil
	for _, g := range c.Groups {
		s.Groups = append(s.Groups, fromZstorBackends(g.Backends))
	}
}

func fromZstorBackends(bs []zcfg.Backend) []Backend {
	out := make([]Backend, len(bs))
	for i, b := range bs {
		out[i] = Backend{Address: b.Address, Namespace: b.NamespaceName(), Password: b.PasswordValue()}
	}
	return out
}

// ParseSize parses a byte count with an optional K, M, G, T or P suffix
// (powers of 1024; "Gi", "GiB" and "GB" are read the same way).
func ParseSize(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "b")
	s = strings.TrimSuffix(s, "i")
	mult := uint64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		case 'p', 'P':
			mult = 1 << 50
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", v, err)
	}
	if n > (^uint64(0))/mult {
		return 0, fmt.Errorf("size %q is too large", v)
	}
	return n * mult, nil
}

// parseDuration accepts a Go duration or a number of seconds.
func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(v)
}

package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
)

// MetaBackends is the number of metadata backends the zdb metastore needs
// (2 data + 2 parity shards).
const MetaBackends = 4

// Validate checks what the official zstor checks before it runs, plus the
// value rules its types enforce when parsing (enum tags, key length,
// IP-literal addresses). All problems are returned joined; each names the
// key and how to fix it.
func (c *Config) Validate() error {
	var errs errList
	if c.MinimalShards < 1 || c.MinimalShards > 255 {
		errs.add("minimal_shards: %d is out of range: set it between 1 and 255", c.MinimalShards)
	}
	if c.ExpectedShards < c.MinimalShards {
		errs.add("expected_shards: %d is less than minimal_shards %d: set expected_shards >= minimal_shards", c.ExpectedShards, c.MinimalShards)
	}
	if c.ExpectedShards > 255 {
		errs.add("expected_shards: %d is more than 255: lower it", c.ExpectedShards)
	}
	if c.RedundantGroups < 0 {
		errs.add("redundant_groups: %d is negative: set it to 0 or more", c.RedundantGroups)
	}
	if c.RedundantNodes < 0 {
		errs.add("redundant_nodes: %d is negative: set it to 0 or more", c.RedundantNodes)
	}
	validEncryption(&errs, "encryption", c.Encryption)
	validEncryption(&errs, "meta.config.encryption", c.Meta.Config.Encryption)
	if c.Compression.Algorithm != "snappy" {
		errs.add("compression.algorithm: %q is not supported: set it to \"snappy\"", c.Compression.Algorithm)
	}
	if c.Meta.Type != "zdb" {
		errs.add("meta.type: %q is not supported: set it to \"zdb\"", c.Meta.Type)
	}
	if n := len(c.Meta.Config.Backends); n != MetaBackends {
		errs.add("meta.config.backends: %d backends given: configure exactly %d", n, MetaBackends)
	}
	for i, b := range c.Meta.Config.Backends {
		validAddress(&errs, fmt.Sprintf("meta.config.backends[%d].address", i), b.Address)
	}
	total := 0
	for gi, g := range c.Groups {
		for bi, b := range g.Backends {
			validAddress(&errs, fmt.Sprintf("groups[%d].backends[%d].address", gi, bi), b.Address)
			total++
		}
	}
	if total < c.ExpectedShards {
		errs.add("groups: insufficient data backends, require at least %d (expected_shards), only found %d: add backends or lower expected_shards", c.ExpectedShards, total)
	}
	return errs.err()
}

func validEncryption(errs *errList, key string, e Encryption) {
	if e.Algorithm != "AES" {
		errs.add("%s.algorithm: %q is not supported: set it to \"AES\"", key, e.Algorithm)
	}
	if _, err := DecodeKey(e.Key); err != nil {
		errs.add("%s.key: %v: set it to 64 hex characters (32 bytes, e.g. from `openssl rand -hex 32`)", key, err)
	}
}

// DecodeKey decodes a 64 hex character AES-256 key.
func DecodeKey(s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, fmt.Errorf("key has %d characters, want 64", len(s))
	}
	k, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key is not hex")
	}
	return k, nil
}

// ParseAddress parses a backend address the way Rust's SocketAddr does: an
// IP literal and a port, IPv6 in brackets. Host names are not accepted.
func ParseAddress(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP literal with port", s)
	}
	if z := ap.Addr().Zone(); z != "" && strings.Trim(z, "0123456789") != "" {
		return netip.AddrPort{}, fmt.Errorf("%q has a named zone, only numeric scope ids are allowed", s)
	}
	return ap, nil
}

func validAddress(errs *errList, key, addr string) {
	if _, err := ParseAddress(addr); err != nil {
		errs.add("%s: %v: write \"10.0.0.1:9900\" or \"[2a02::1]:9900\" (no host names)", key, err)
	}
}

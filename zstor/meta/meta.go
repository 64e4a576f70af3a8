// Package meta owns zstor's object metadata: the official bincode MetaData
// layout, metadata key derivation, and the metadata store that keeps each
// value encrypted and 2+2 erasure coded over the 4 user-key metadata
// backends. It also exports the bincode Encoder/Decoder the daemon protocol
// uses.
//
// It does not own data shards, placement or the daemon.
package meta

import (
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/config"
)

// Key is a 0-db sequential key as recorded in metadata: the official enum
// Key { V1(u32), V2(u64) }.
type Key struct {
	V1 bool   // a 4-byte key of a 0-db v1
	ID uint64 // the sequence id
}

// Bytes returns the key as sent to 0-db (little-endian, 4 or 8 bytes).
func (k Key) Bytes() []byte {
	n := 8
	if k.V1 {
		n = 4
	}
	b := make([]byte, n)
	for i := 0; i < n; i++ {
		b[i] = byte(k.ID >> (8 * i))
	}
	return b
}

// ShardInfo says where one shard lives.
type ShardInfo struct {
	Index    int
	Checksum codec.Checksum
	Keys     []Key
	Backend  config.Backend
}

// MetaData is everything needed to bring an object back.
type MetaData struct {
	DataShards       int
	DisposableShards int
	Checksum         codec.Checksum
	Key              string // AES-256 key, 64 lower-case hex chars (EncryptionMeta::Aes)
	Shards           []ShardInfo
}

// Encode appends the official bincode encoding of m.
func (m *MetaData) Encode(e *Encoder) error {
	e.U64(uint64(m.DataShards))
	e.U64(uint64(m.DisposableShards))
	e.Bytes(m.Checksum[:])
	e.U32(0) // EncryptionMeta::Aes
	e.String(strings.ToLower(m.Key))
	e.U32(0) // CompressionMeta::Snappy
	e.U64(uint64(len(m.Shards)))
	for _, s := range m.Shards {
		e.U64(uint64(s.Index))
		e.Bytes(s.Checksum[:])
		e.U64(uint64(len(s.Keys)))
		for _, k := range s.Keys {
			if k.V1 {
				e.U32(0)
				e.U32(uint32(k.ID))
			} else {
				e.U32(1)
				e.U64(k.ID)
			}
		}
		ap, err := config.ParseAddress(s.Backend.Address)
		if err != nil {
			return fmt.Errorf("shard %d backend: %w", s.Index, err)
		}
		e.SocketAddr(ap)
		e.OptString(s.Backend.Namespace)
		e.OptString(s.Backend.Password)
	}
	return nil
}

// Marshal returns the bincode encoding of m.
func (m *MetaData) Marshal() ([]byte, error) {
	var e Encoder
	if err := m.Encode(&e); err != nil {
		return nil, err
	}
	return e.Buf, nil
}

// Decode reads a MetaData.
func Decode(d *Decoder) (*MetaData, error) {
	m := &MetaData{}
	m.DataShards = int(d.U64())
	m.DisposableShards = int(d.U64())
	copy(m.Checksum[:], d.Bytes(codec.ChecksumSize))
	if v := d.U32(); v != 0 && d.Err == nil {
		return nil, fmt.Errorf("metadata: unknown encryption variant %d", v)
	}
	m.Key = d.String()
	if v := d.U32(); v != 0 && d.Err == nil {
		return nil, fmt.Errorf("metadata: unknown compression variant %d", v)
	}
	n := d.Len(1)
	for i := 0; i < n && d.Err == nil; i++ {
		var s ShardInfo
		s.Index = int(d.U64())
		copy(s.Checksum[:], d.Bytes(codec.ChecksumSize))
		nk := d.Len(4)
		for j := 0; j < nk && d.Err == nil; j++ {
			switch v := d.U32(); v {
			case 0:
				s.Keys = append(s.Keys, Key{V1: true, ID: uint64(d.U32())})
			case 1:
				s.Keys = append(s.Keys, Key{ID: d.U64()})
			default:
				if d.Err == nil {
					return nil, fmt.Errorf("metadata: unknown key variant %d", v)
				}
			}
		}
		s.Backend.Address = d.SocketAddr().String()
		s.Backend.Namespace = d.OptString()
		s.Backend.Password = d.OptString()
		m.Shards = append(m.Shards, s)
	}
	if d.Err != nil {
		return nil, fmt.Errorf("metadata: %w", d.Err)
	}
	return m, nil
}

// Unmarshal decodes a complete bincode MetaData.
func Unmarshal(b []byte) (*MetaData, error) {
	d := &Decoder{Buf: b}
	m, err := Decode(d)
	if err != nil {
		return nil, err
	}
	if len(d.Buf) != 0 {
		return nil, fmt.Errorf("metadata: %d trailing bytes", len(d.Buf))
	}
	return m, nil
}

// SameBackend reports whether a and b name the same 0-db namespace
// (addresses compared as parsed socket addresses).
func SameBackend(a, b config.Backend) bool {
	pa, ea := config.ParseAddress(a.Address)
	pb, eb := config.ParseAddress(b.Address)
	if ea != nil || eb != nil {
		return false
	}
	return pa == pb && eqOpt(a.Namespace, b.Namespace) && eqOpt(a.Password, b.Password)
}

func eqOpt(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// BackendID is a stable identity of a backend for maps and logs (address
// and namespace, never the password).
func BackendID(b config.Backend) string {
	addr := b.Address
	if ap, err := config.ParseAddress(b.Address); err == nil {
		addr = ap.String()
	}
	if b.Namespace == nil {
		return addr
	}
	return addr + "/" + *b.Namespace
}

// ObjectPath turns a stored file's path into the string that is hashed:
// lexically cleaned, with the virtual root stripped component-wise.
func ObjectPath(p, root string) (string, error) {
	p = path.Clean(p)
	if root == "" {
		return p, nil
	}
	root = path.Clean(root)
	switch {
	case root == "/" && strings.HasPrefix(p, "/"):
		return p[1:], nil
	case p == root:
		return "", nil
	case strings.HasPrefix(p, root+"/"):
		return p[len(root)+1:], nil
	}
	return "", fmt.Errorf("path %s is not under the virtual root %s", p, root)
}

// ObjectKey returns `/{prefix}/meta/{hex(b2(ObjectPath(p, root)))}`.
func ObjectKey(prefix, p, root string) (string, error) {
	op, err := ObjectPath(p, root)
	if err != nil {
		return "", err
	}
	sum := codec.Sum([]byte(op))
	return "/" + prefix + "/meta/" + hex.EncodeToString(sum[:]), nil
}

// MetaPrefix is the key prefix of all object metadata.
func MetaPrefix(prefix string) string { return "/" + prefix + "/meta/" }

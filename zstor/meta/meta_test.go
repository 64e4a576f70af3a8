package meta

import (
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/config"
)

func sampleMeta() *MetaData {
	var sum, s0, s1 codec.Checksum
	for i := range sum {
		sum[i] = byte(i)
		s0[i] = 0xa0 + byte(i)
		s1[i] = 0xb0 + byte(i)
	}
	return &MetaData{
		DataShards: 1, DisposableShards: 1, Checksum: sum,
		Key: strings.Repeat("ab", 32),
		Shards: []ShardInfo{
			{Index: 0, Checksum: s0, Keys: []Key{{ID: 1}, {ID: 2}}, Backend: config.Backend{Address: "10.1.2.3:9900", Namespace: config.String("ns"), Password: config.String("pw")}},
			{Index: 1, Checksum: s1, Keys: []Key{{V1: true, ID: 7}}, Backend: config.Backend{Address: "[2001:db8::1]:9901"}},
		},
	}
}

// TestMetaDataVector checks the bincode layout byte by byte, built here from
// the rules in spec §3.4 (bincode 1 defaults) independently of the encoder,
// and kept as testdata/metadata.hex.
func TestMetaDataVector(t *testing.T) {
	var w bytes.Buffer
	le64 := func(v uint64) {
		for i := 0; i < 8; i++ {
			w.WriteByte(byte(v >> (8 * i)))
		}
	}
	le32 := func(v uint32) {
		for i := 0; i < 4; i++ {
			w.WriteByte(byte(v >> (8 * i)))
		}
	}
	m := sampleMeta()
	le64(1)                // data_shards (usize)
	le64(1)                // disposable_shards
	w.Write(m.Checksum[:]) // [u8;16] without length
	le32(0)                // EncryptionMeta::Aes
	le64(64)               // hex key string length
	w.WriteString(m.Key)   // key
	le32(0)                // CompressionMeta::Snappy
	le64(2)                // shards len
	le64(0)                // shard_idx
	w.Write(m.Shards[0].Checksum[:])
	le64(2) // keys len
	le32(1)
	le64(1) // Key::V2(1)
	le32(1)
	le64(2) // Key::V2(2)
	le32(0) // SocketAddr::V4
	w.Write([]byte{10, 1, 2, 3})
	w.Write([]byte{0xac, 0x26}) // port 9900 LE
	w.WriteByte(1)
	le64(2)
	w.WriteString("ns")
	w.WriteByte(1)
	le64(2)
	w.WriteString("pw")
	le64(1)
	w.Write(m.Shards[1].Checksum[:])
	le64(1)
	le32(0)
	le32(7) // Key::V1(7)
	le32(1) // SocketAddr::V6
	w.Write([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	w.Write([]byte{0xad, 0x26}) // 9901
	w.WriteByte(0)              // namespace None
	w.WriteByte(0)              // password None
	want := w.Bytes()

	golden, err := os.ReadFile("testdata/metadata.hex")
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(want) != strings.TrimSpace(string(golden)) {
		t.Fatalf("hand-built layout differs from testdata/metadata.hex")
	}
	got, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("marshal:\n got %x\nwant %x", got, want)
	}
	back, err := Unmarshal(want)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := back.Marshal()
	if !bytes.Equal(again, want) || back.Shards[1].Backend.Address != "[2001:db8::1]:9901" || back.Shards[1].Backend.Namespace != nil {
		t.Errorf("unmarshal round trip: %+v", back)
	}
	if _, err := Unmarshal(want[:len(want)-1]); err == nil {
		t.Errorf("truncated metadata accepted")
	}
}

func TestObjectKey(t *testing.T) {
	for _, tc := range []struct{ path, root, hashed string }{
		{"/data/index/zdbfs-meta/i0", "", "/data/index/zdbfs-meta/i0"},
		{"/data/./index//x/../i1", "", "/data/index/i1"},
		{"/data/d3", "/", "data/d3"},
		{"/data/d3", "/data", "d3"},
	} {
		key, err := ObjectKey("pfx", tc.path, tc.root)
		if err != nil {
			t.Fatal(err)
		}
		sum := codec.Sum([]byte(tc.hashed))
		if key != "/pfx/meta/"+hex.EncodeToString(sum[:]) {
			t.Errorf("ObjectKey(%q, root %q) = %s, want hash of %q", tc.path, tc.root, key, tc.hashed)
		}
	}
	// b2sum -l 128 of "/data/d0" (printf '/data/d0' | b2sum -l 128).
	if k, _ := ObjectKey("p", "/data/d0", ""); k != "/p/meta/"+b2hex("/data/d0") {
		t.Errorf("key %s", k)
	}
	if _, err := ObjectKey("p", "/other/x", "/data"); err == nil {
		t.Errorf("path outside root accepted")
	}
}

func b2hex(s string) string { c := codec.Sum([]byte(s)); return hex.EncodeToString(c[:]) }

func TestValueEncoding(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	plain := []byte("metadata value")
	vals, err := EncodeValue(key, plain)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if v[0] != byte(i) {
			t.Errorf("value %d starts with index %d", i, v[0])
		}
		sh := v[1 : len(v)-16]
		if s := codec.Sum(sh); !bytes.Equal(s[:], v[len(v)-16:]) {
			t.Errorf("value %d: trailing checksum mismatch", i)
		}
	}
	// enc = 12 + 14 + 16 = 42 bytes, padded to 44 -> shards of 22 bytes.
	if len(vals[0]) != 1+22+16 {
		t.Errorf("value length %d, want 39", len(vals[0]))
	}
	for _, lost := range [][]int{{0, 1}, {2, 3}, {0, 3}} {
		vs := append([][]byte(nil), vals...)
		for _, i := range lost {
			vs[i] = nil
		}
		got, err := DecodeValue(key, vs)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("lost %v: %v %q", lost, err, got)
		}
	}
	vs := [][]byte{vals[0], nil, nil, nil}
	if _, err := DecodeValue(key, vs); err == nil {
		t.Errorf("one shard decoded")
	}
	bad := append([]byte(nil), vals[1]...)
	bad[3] ^= 1
	if _, err := DecodeValue(key, [][]byte{vals[0], bad, nil, nil}); err == nil {
		t.Errorf("corrupt shard used")
	}
	if v, err := DecodeValue(key, make([][]byte, 4)); v != nil || err != nil {
		t.Errorf("missing value: %v %v", v, err)
	}
}

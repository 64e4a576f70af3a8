package codec

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"github.com/golang/snappy"
)

var update = flag.Bool("update", false, "rewrite golden vectors in testdata")

// vectors is testdata/vectors.json: compatibility vectors for the pipeline.
// Checksums come from coreutils `b2sum -l 128`, the AES-GCM ones are NIST
// GCM test cases 13-15 (AES-256), padding follows the 0-stor v2 rule, the
// snappy golden is golang/snappy's BufferedWriter output (the framing
// format) and the Reed-Solomon golden was cross-checked against the
// independent GF(2^8) construction in rsref_test.go.
type vectors struct {
	Checksum []struct {
		Input string `json:"input"` // hex, or "zeros:N"
		B2    string `json:"b2"`
	} `json:"checksum"`
	AESGCM []struct {
		Key, Nonce, Plain, Out string
	} `json:"aes_gcm"`
	Padding []struct {
		Len    int    `json:"len"`
		Shards int    `json:"shards"`
		Pad    string `json:"pad"`
	} `json:"padding"`
	Snappy struct {
		Input  string `json:"input"` // generator name
		Framed string `json:"framed"`
	} `json:"snappy"`
	RS []struct {
		Data   string   `json:"data"`
		K      int      `json:"k"`
		M      int      `json:"m"`
		Shards []string `json:"shards"`
	} `json:"rs"`
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// snappyInput is a deterministic stream with one compressible and one
// incompressible 64 KiB chunk and a short tail.
func snappyInput() []byte {
	out := bytes.Repeat([]byte("qsfs archives zdb files. "), 2700)[:FrameSize]
	x := uint32(12345)
	for i := 0; i < FrameSize+1000; i++ {
		x = x*1664525 + 1013904223
		out = append(out, byte(x>>24))
	}
	return out
}

func TestVectorChecksum(t *testing.T) {
	for _, c := range loadVectors(t).Checksum {
		var in []byte
		if n := 0; len(c.Input) > 6 && c.Input[:6] == "zeros:" {
			for _, ch := range c.Input[6:] {
				n = n*10 + int(ch-'0')
			}
			in = make([]byte, n)
		} else {
			in = unhex(t, c.Input)
		}
		got := Sum(in)
		if hex.EncodeToString(got[:]) != c.B2 {
			t.Errorf("b2(%s) = %x, want %s", c.Input, got, c.B2)
		}
	}
}

func TestVectorAESGCM(t *testing.T) {
	for _, c := range loadVectors(t).AESGCM {
		key, nonce, plain, want := unhex(t, c.Key), unhex(t, c.Nonce), unhex(t, c.Plain), unhex(t, c.Out)
		aead, err := newAEAD(key)
		if err != nil {
			t.Fatal(err)
		}
		got := append(append([]byte{}, nonce...), aead.Seal(nil, nonce, plain, nil)...)
		if !bytes.Equal(got, want) {
			t.Errorf("layout nonce||ct||tag:\n got %x\nwant %x", got, want)
		}
		dec, err := Decrypt(key, append([]byte{}, want...))
		if err != nil || !bytes.Equal(dec, plain) {
			t.Errorf("decrypt vector: %v %x", err, dec)
		}
		enc, err := Encrypt(key, plain)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != NonceSize+len(plain)+TagSize {
			t.Errorf("encrypt length %d", len(enc))
		}
		if dec, err := Decrypt(key, enc); err != nil || !bytes.Equal(dec, plain) {
			t.Errorf("round trip: %v", err)
		}
		enc[len(enc)-1] ^= 1
		if _, err := Decrypt(key, enc); err == nil {
			t.Errorf("tampered tag accepted")
		}
	}
}

func TestVectorPadding(t *testing.T) {
	for _, c := range loadVectors(t).Padding {
		in := bytes.Repeat([]byte{0xaa}, c.Len)
		got := Pad(append([]byte{}, in...), c.Shards)
		if hex.EncodeToString(got[c.Len:]) != c.Pad {
			t.Errorf("pad(len %d, %d shards) = %x, want %s", c.Len, c.Shards, got[c.Len:], c.Pad)
		}
		back, err := Unpad(got, c.Shards)
		if err != nil || !bytes.Equal(back, in) {
			t.Errorf("unpad: %v", err)
		}
	}
}

func TestVectorSnappyFraming(t *testing.T) {
	v := loadVectors(t)
	in := snappyInput()
	var ref bytes.Buffer
	w := snappy.NewBufferedWriter(&ref)
	w.Write(in)
	w.Close()
	if *update {
		v.Snappy.Input = "snappyInput"
		v.Snappy.Framed = hex.EncodeToString(ref.Bytes())
		writeVectors(t, v)
	}
	want := unhex(t, v.Snappy.Framed)
	if !bytes.Equal(ref.Bytes(), want) {
		t.Errorf("golang/snappy writer output changed from the golden vector")
	}
	for _, workers := range []int{1, 3} {
		fc := NewFrameCompressor(workers)
		got := fc.Append(nil, in[:FrameSize])
		got = fc.Append(got, in[FrameSize:])
		if !bytes.Equal(got, want) {
			t.Errorf("workers=%d: framed output differs from golden (%d vs %d bytes)", workers, len(got), len(want))
		}
	}
	if want[0] != 0xff || string(want[4:10]) != "sNaPpY" || want[10] != chunkCompressed || want[len(want)-1000-8] != chunkRaw {
		t.Errorf("golden does not have the expected chunk types")
	}
	var out bytes.Buffer
	if _, err := Decompress(&out, want); err != nil || !bytes.Equal(out.Bytes(), in) {
		t.Errorf("decompress golden: %v", err)
	}
	out.Reset()
	if _, err := DecodeFramed(&out, want); err != nil || !bytes.Equal(out.Bytes(), in) {
		t.Errorf("DecodeFramed golden: %v", err)
	}
	if _, err := DecodeFramed(&bytes.Buffer{}, want[10:]); err == nil {
		t.Errorf("stream without identifier accepted")
	}
	bad := append([]byte{}, want...)
	bad[14] ^= 0xff // first chunk's crc
	if _, err := Decompress(&bytes.Buffer{}, bad); err == nil {
		t.Errorf("corrupt chunk checksum accepted")
	}
	if _, err := DecodeFramed(&bytes.Buffer{}, bad); err == nil {
		t.Errorf("DecodeFramed: corrupt chunk checksum accepted")
	}
	// Padding and skippable chunks between data chunks are ignored.
	withPad := append([]byte{}, want[:10]...)
	withPad = append(withPad, 0xfe, 3, 0, 0, 0, 0, 0, 0x90, 1, 0, 0, 7)
	withPad = append(withPad, want[10:]...)
	out.Reset()
	if _, err := DecodeFramed(&out, withPad); err != nil || !bytes.Equal(out.Bytes(), in) {
		t.Errorf("DecodeFramed with padding: %v", err)
	}
}

func TestVectorReedSolomon(t *testing.T) {
	v := loadVectors(t)
	if *update {
		for i := range v.RS {
			c := &v.RS[i]
			shards := refEncode(unhex(t, c.Data), c.K, c.M)
			c.Shards = nil
			for _, s := range shards {
				c.Shards = append(c.Shards, hex.EncodeToString(s))
			}
		}
		writeVectors(t, v)
	}
	for _, c := range v.RS {
		data := unhex(t, c.Data)
		shards, err := Split(append([]byte{}, data...), c.K, c.M)
		if err != nil {
			t.Fatal(err)
		}
		ref := refEncode(data, c.K, c.M)
		for i := range shards {
			if hex.EncodeToString(shards[i]) != c.Shards[i] {
				t.Errorf("%d+%d shard %d = %x, want %s", c.K, c.M, i, shards[i], c.Shards[i])
			}
			if !bytes.Equal(shards[i], ref[i]) {
				t.Errorf("%d+%d shard %d differs from reference construction", c.K, c.M, i)
			}
		}
		// Drop the first m shards and decode.
		for i := 0; i < c.M; i++ {
			shards[i] = nil
		}
		got, err := Join(shards, c.K, c.M)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%d+%d join after losing %d shards: %v", c.K, c.M, c.M, err)
		}
	}
}

func writeVectors(t *testing.T, v *vectors) {
	t.Helper()
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/vectors.json", append(raw, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

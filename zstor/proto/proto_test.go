package proto

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"testing"

	"github.com/qsfs/qsfs/zstor/meta"
)

func s(v string) *string { return &v }

// TestWireVectors pins the bincode layout of commands and responses: enum
// tag u32 LE, PathBuf/String as u64 LE length + bytes, bool and option tags
// as one byte, [u8;16] raw; and the frame as BE u16 length.
func TestWireVectors(t *testing.T) {
	cases := []struct {
		cmd  Command
		want string
	}{
		{Command{Kind: Store, File: "/a", KeyPath: s("/k"), Delete: true, Blocking: false},
			"00000000" + "0200000000000000" + "2f61" + "01" + "0200000000000000" + "2f6b" + "00" + "01" + "00"},
		{Command{Kind: Retrieve, File: "/x"}, "01000000" + "0200000000000000" + "2f78"},
		{Command{Kind: Rebuild, Key: s("k")}, "02000000" + "00" + "01" + "0100000000000000" + "6b" + "00"},
		{Command{Kind: Check, File: "/c"}, "03000000" + "0200000000000000" + "2f63"},
	}
	for _, tc := range cases {
		b, err := tc.cmd.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(b) != tc.want {
			t.Errorf("kind %d: got %x, want %s", tc.cmd.Kind, b, tc.want)
		}
		back, err := UnmarshalCommand(b)
		if err != nil || !reflect.DeepEqual(*back, tc.cmd) {
			t.Errorf("kind %d: round trip %+v %v", tc.cmd.Kind, back, err)
		}
	}
	r := Response{Kind: Err, Err: "no"}
	if got := hex.EncodeToString(r.Marshal()); got != "01000000"+"0200000000000000"+"6e6f" {
		t.Errorf("err response %s", got)
	}
	r = Response{Kind: Checksum}
	r.Checksum[0] = 0xff
	if got := r.Marshal(); len(got) != 20 || got[0] != 2 || got[4] != 0xff {
		t.Errorf("checksum response %x", got)
	}
	var buf bytes.Buffer
	WriteFrame(&buf, []byte{1, 2, 3})
	if hex.EncodeToString(buf.Bytes()) != "0003010203" {
		t.Errorf("frame %x", buf.Bytes())
	}
	p, err := ReadFrame(&buf)
	if err != nil || !bytes.Equal(p, []byte{1, 2, 3}) {
		t.Errorf("read frame %x %v", p, err)
	}
}

func TestRebuildWithMeta(t *testing.T) {
	md := &meta.MetaData{DataShards: 1, Key: "00", Shards: []meta.ShardInfo{{Backend: configBackend()}}}
	c := Command{Kind: Rebuild, HasFile: true, File: "/f", Meta: md}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalCommand(b)
	if err != nil || back.Meta == nil || back.Meta.Shards[0].Backend.Address != "127.0.0.1:9900" || back.File != "/f" {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

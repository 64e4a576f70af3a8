package zdb

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.NewReplacer(" ", "", "|", "", "\n", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// The spec's example: payload "first" stored with CRC bytes 65 d7 4c cf.
func TestCRC32CMatchesOfficial(t *testing.T) {
	if got := crc32c([]byte("first")); got != 0xcf4cd765 {
		t.Fatalf("crc32c(first) = %08x, want cf4cd765", got)
	}
	if got := crc32c(nil); got != 0 {
		t.Fatalf("crc32c(empty) = %08x, want 0", got)
	}
}

func TestIndexHeaderAndItemLayout(t *testing.T) {
	// official-behaviour.md §2.7, i0 of a seq namespace
	want := unhex(t, "49 44 58 30 04 00 00 00"+strings.Repeat("00", 16)+"00 00 00 00 01")
	if got := indexHeader(0, modeSeq); !bytes.Equal(got, want) {
		t.Fatalf("index header\n got %x\nwant %x", got, want)
	}
	item := unhex(t, "08 1c 00 00 00 05 00 00 00 00 00 00 00 00 00 00 00 00 49 a4 06 6b 65 d7 4c cf 00 00 00 00 00 00 00 00")
	it := decodeIndexItem(item)
	if it.idLength != 8 || it.offset != 28 || it.length != 5 || it.crc != 0xcf4cd765 || it.timestamp != 0x6b06a449 {
		t.Fatalf("decoded %+v", it)
	}
	out := make([]byte, indexItemSize)
	it.encode(out)
	if !bytes.Equal(out, item) {
		t.Fatalf("re-encoded\n got %x\nwant %x", out, item)
	}
}

func TestDataHeaderAndEntryLayout(t *testing.T) {
	want := unhex(t, "44 41 54 30 03 00 00 00"+strings.Repeat("00", 16)+"00 00 00 00")
	if got := dataHeader(0); !bytes.Equal(got, want) {
		t.Fatalf("data header\n got %x\nwant %x", got, want)
	}
	raw := unhex(t, "08 05 00 00 00 00 00 00 00 65 d7 4c cf 00 49 a4 06 6b")
	de := decodeDataEntry(raw)
	if de.idLength != 8 || de.length != 5 || de.crc != 0xcf4cd765 || de.flags != 0 || de.timestamp != 0x6b06a449 {
		t.Fatalf("decoded %+v", de)
	}
	out := make([]byte, dataEntrySize)
	de.encode(out)
	if !bytes.Equal(out, raw) {
		t.Fatalf("re-encoded %x", out)
	}
}

func TestNamespaceDescriptorLayout(t *testing.T) {
	d := nsDescriptor{name: "zdbfs-temp", password: "hello", maxsize: 0x0102, public: false}
	got := d.encode()
	want := append(unhex(t, "01 00 00 00 0a 05 02 01 00 00 00 00 00 00 04"), "zdbfs-temphello"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("descriptor\n got %x\nwant %x", got, want)
	}
	back, ok := decodeNSDescriptor(got)
	if !ok || back != d {
		t.Fatalf("decoded %+v ok=%v", back, ok)
	}
	// default flags 0x05: public + extended
	pub, _ := decodeNSDescriptor(append(unhex(t, "01 00 00 00 01 00 00 00 00 00 00 00 00 00 05"), 'x'))
	if !pub.public || pub.worm || pub.name != "x" {
		t.Fatalf("decoded %+v", pub)
	}
}

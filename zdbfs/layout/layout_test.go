package layout

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The expected bytes below follow qsfs-stack.md §2.2 and
// official-behaviour.md §3.2.

func TestHeaderBytes(t *testing.T) {
	b := EncodeHeader(Header{Magic: MagicMeta, Version: Version, Size: 10 << 30})
	if len(b) != 24 {
		t.Fatalf("header is %d bytes, want 24", len(b))
	}
	want := []byte{'Z', 'D', 'B', 'F', 'S', 'M', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x00, 0x00, 0x00, 0x80, 0x02, 0x00, 0x00, 0x00}
	if !bytes.Equal(b, want) {
		t.Fatalf("header\n got % x\nwant % x", b, want)
	}
	h, err := DecodeHeader(b, MagicMeta)
	if err != nil || h.Size != 10<<30 || h.Version != 1 {
		t.Fatalf("decode: %+v %v", h, err)
	}
	if _, err := DecodeHeader(b, MagicData); err == nil {
		t.Fatal("decode with the data magic succeeded")
	}
}

func TestFileInode(t *testing.T) {
	in := Inode{Mode: 0o100644, Dev: 7, UID: 1000, GID: 100, Size: 5, Links: 1, Atime: 1, Mtime: 2, Ctime: 3}
	b := EncodeFile(&in, []uint32{9})
	if len(b) != 56 {
		t.Fatalf("5-byte file inode is %d bytes, want 56", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != 0o100644 || le.Uint32(b[12:]) != 7 || le.Uint16(b[16:]) != 1000 ||
		le.Uint16(b[18:]) != 100 || le.Uint64(b[20:]) != 5 || le.Uint32(b[28:]) != 1 ||
		le.Uint32(b[32:]) != 1 || le.Uint32(b[36:]) != 2 || le.Uint32(b[40:]) != 3 ||
		le.Uint64(b[44:]) != 1 || le.Uint32(b[52:]) != 9 {
		t.Fatalf("field offsets wrong: % x", b)
	}
	r, err := DecodeRecord(b)
	if err != nil || r.Inode != in || len(r.Blocks) != 1 || r.Blocks[0] != 9 {
		t.Fatalf("decode: %+v %v", r, err)
	}
	if _, err := DecodeRecord(b[:20]); err == nil {
		t.Fatal("short inode decoded")
	}
	if _, err := DecodeRecord(b[:55]); err == nil {
		t.Fatal("truncated block list decoded")
	}
}

func TestDirInode(t *testing.T) {
	var slots [DirlistSize]uint64
	slots[46], slots[92] = 2, 3
	in := Inode{Mode: 0o040755, Links: 2}
	b := EncodeDir(&in, &slots)
	if len(b) != 1068 {
		t.Fatalf("dir inode is %d bytes, want 1068", len(b))
	}
	if !bytes.Equal(b[44:52], bytes.Repeat([]byte{0x42}, 8)) {
		t.Fatalf("unused slot is % x, want 0x42 bytes", b[44:52])
	}
	r, err := DecodeRecord(b)
	if err != nil || r.Dirlist != slots {
		t.Fatalf("decode: %v %v", r.Dirlist, err)
	}
}

func TestSymlink(t *testing.T) {
	in := Inode{Mode: 0o120777, Links: 1}
	b := EncodeSymlink(&in, []byte("target"))
	if len(b) != 44+7 || b[len(b)-1] != 0 || binary.LittleEndian.Uint64(b[20:]) != 7 {
		t.Fatalf("symlink encoding: % x", b)
	}
	r, err := DecodeRecord(b)
	if err != nil || string(r.Target) != "target" {
		t.Fatalf("decode: %q %v", r.Target, err)
	}
}

func TestDirlist(t *testing.T) {
	dot := EncodeDirlist(5, []DirEntry{{".", 1}})
	dotdot := EncodeDirlist(6, []DirEntry{{"..", 1}})
	if len(dot) != 28 || len(dotdot) != 29 {
		t.Fatalf("dirlist sizes %d and %d, want 28 and 29", len(dot), len(dotdot))
	}
	want := []byte{5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, '.', 0}
	if !bytes.Equal(dot, want) {
		t.Fatalf("dirlist\n got % x\nwant % x", dot, want)
	}
	b := EncodeDirlist(7, []DirEntry{{"zeta", 4}, {"alpha", 3}, {"Beta", 9}})
	got, err := DecodeDirlist(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != "Beta" || got[1].Name != "alpha" || got[2] != (DirEntry{"zeta", 4}) {
		t.Fatalf("entries not sorted by strcmp: %+v", got)
	}
	if _, err := DecodeDirlist(b[:len(b)-3]); err == nil {
		t.Fatal("truncated dirlist decoded")
	}
}

func TestBucket(t *testing.T) {
	cases := map[string]int{".": 46, "..": 92, "a": 97, "ab": (97 + 98) % 128, "\xff": 127, "\x80\x80": 0, "é": (0xc3 + 0xa9 - 512 + 1024) % 128}
	for name, want := range cases {
		if got := Bucket(name); got != want {
			t.Errorf("Bucket(%q) = %d, want %d", name, got, want)
		}
	}
}

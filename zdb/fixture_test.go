package zdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qsfs/qsfs/zdb/client"
)

// fixtureNS builds one namespace's files byte by byte, the way official
// 2.0.7 lays them out (qsfs-stack.md §1.4, official-behaviour.md §2.7).
type fixtureNS struct {
	t       *testing.T
	idxDir  string
	datDir  string
	mode    uint8
	idx     map[uint32]*bytes.Buffer
	dat     map[uint32]*bytes.Buffer
	prevIdx uint32
	prevDat uint32
}

func newFixtureNS(t *testing.T, root, name string, mode uint8, nsFile []byte) *fixtureNS {
	f := &fixtureNS{t: t, idxDir: filepath.Join(root, "zdb-index", name), datDir: filepath.Join(root, "zdb-data", name),
		mode: mode, idx: map[uint32]*bytes.Buffer{}, dat: map[uint32]*bytes.Buffer{}}
	os.MkdirAll(f.idxDir, 0o700)
	os.MkdirAll(f.datDir, 0o700)
	if err := os.WriteFile(filepath.Join(f.idxDir, "zdb-namespace"), nsFile, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixtureNS) files(id uint32) (*bytes.Buffer, *bytes.Buffer) {
	if f.idx[id] == nil {
		ih := append([]byte("IDX0"), 4, 0, 0, 0)
		ih = append(ih, make([]byte, 16)...)
		ih = binary.LittleEndian.AppendUint32(ih, id)
		f.idx[id] = bytes.NewBuffer(append(ih, f.mode))
		dh := append([]byte("DAT0"), 3, 0, 0, 0)
		dh = append(dh, make([]byte, 16)...)
		f.dat[id] = bytes.NewBuffer(binary.LittleEndian.AppendUint32(dh, id))
	}
	return f.idx[id], f.dat[id]
}

// put appends a data entry and its index record to file id; dataidField is
// what gets written in the index record's dataid field (official was seen
// writing 0). It returns the index record's offset.
func (f *fixtureNS) put(id uint32, key, payload []byte, flags uint8, ts uint32, dataidField uint32, parent [2]uint32) uint32 {
	ib, db := f.files(id)
	doff := uint32(db.Len())
	crc := crc32c(payload)
	var d []byte
	d = append(d, uint8(len(key)))
	d = binary.LittleEndian.AppendUint32(d, uint32(len(payload)))
	d = binary.LittleEndian.AppendUint32(d, f.prevDat)
	d = binary.LittleEndian.AppendUint32(d, crc)
	d = append(d, flags)
	d = binary.LittleEndian.AppendUint32(d, ts)
	d = append(append(d, key...), payload...)
	db.Write(d)
	f.prevDat = doff
	ioff := uint32(ib.Len())
	var r []byte
	r = append(r, uint8(len(key)))
	r = binary.LittleEndian.AppendUint32(r, doff)
	r = binary.LittleEndian.AppendUint32(r, uint32(len(payload)))
	r = binary.LittleEndian.AppendUint32(r, f.prevIdx)
	r = append(r, flags)
	r = binary.LittleEndian.AppendUint32(r, dataidField)
	r = binary.LittleEndian.AppendUint32(r, ts)
	r = binary.LittleEndian.AppendUint32(r, crc)
	r = binary.LittleEndian.AppendUint32(r, parent[0])
	r = binary.LittleEndian.AppendUint32(r, parent[1])
	ib.Write(append(r, key...))
	f.prevIdx = ioff
	return ioff
}

// flag sets the flags byte of an index record in place.
func (f *fixtureNS) flag(id, off uint32, flags uint8) { f.idx[id].Bytes()[off+13] = flags }

func (f *fixtureNS) write() {
	for id, b := range f.idx {
		os.WriteFile(filepath.Join(f.idxDir, fmt.Sprintf("i%d", id)), b.Bytes(), 0o600)
		os.WriteFile(filepath.Join(f.datDir, fmt.Sprintf("d%d", id)), f.dat[id].Bytes(), 0o600)
	}
}

func le64(id uint64) []byte { return binary.LittleEndian.AppendUint64(nil, id) }

func TestOpensOfficialFiles(t *testing.T) {
	root := t.TempDir()
	// seq namespace: the spec's hex example (id 0 = "first", crc 65 d7 4c cf,
	// ts 0x6b06a449) and a second file whose records carry dataid 0
	nsSeq := append([]byte{1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, "fs"...)
	s := newFixtureNS(t, root, "fs", modeSeq, nsSeq)
	off0 := s.put(0, le64(0), []byte("first"), 0, 0x6b06a449, 0, [2]uint32{})
	if !bytes.Equal(s.idx[0].Bytes()[off0:off0+34], unhex(t, "08 1c 00 00 00 05 00 00 00 00 00 00 00 00 00 00 00 00 49 a4 06 6b 65 d7 4c cf 00 00 00 00 00 00 00 00")) {
		t.Fatalf("fixture builder disagrees with the spec's hex example: %x", s.idx[0].Bytes()[off0:off0+34])
	}
	s.put(0, le64(1), []byte("second"), 0, 0x6b06a44a, 0, [2]uint32{})
	s.put(1, le64(2), []byte("third-in-d1"), 0, 0x6b06a44b, 0, [2]uint32{})
	s.write()

	// user namespace: k1 overwritten (old record flagged), k2 deleted, k3 in i1/d1
	nsUser := append([]byte{1, 0, 0, 0, 2, 2, 0x10, 0, 0, 0, 0, 0, 0, 0, 4}, "fuPW"...)
	u := newFixtureNS(t, root, "fu", modeUser, nsUser)
	o1 := u.put(0, []byte("k1"), []byte("old"), 0, 100, 0, [2]uint32{})
	u.put(0, []byte("k1"), []byte("new"), 0, 101, 0, [2]uint32{0, o1})
	u.flag(0, o1, flagDeleted)
	o2 := u.put(0, []byte("k2"), []byte("gone"), 0, 102, 0, [2]uint32{})
	u.flag(0, o2, flagDeleted)
	u.dat[0].Write(append([]byte{2, 0, 0, 0, 0}, make([]byte, 13)...)) // DEL data entry (sloppy but unused)
	u.put(1, []byte("k3"), []byte("in-d1"), 0, 103, 0, [2]uint32{})
	u.write()

	p := startZDB(t, root)
	c := p.dial("unix")
	expect(t, c, "*[$default $fs $fu]", "NSLIST")
	expect(t, c, "+OK", "SELECT", "fs")
	expect(t, c, "$first", "GET", client.SeqKey(0))
	expect(t, c, "$second", "GET", client.SeqKey(1))
	expect(t, c, "$third-in-d1", "GET", client.SeqKey(2))
	expect(t, c, fmt.Sprintf(":%d", 0x6b06a449), "KEYTIME", client.SeqKey(0))
	expect(t, c, seq(3), "SET", "", "fourth")
	m := client.ParseInfo(do(t, c, "NSINFO", "fs").Str)
	if m["mode"] != "sequential" || m["entries"] != "4" || m["public"] != "yes" {
		t.Fatalf("NSINFO fs: %v", m)
	}
	expect(t, c, "-Namespace protected and private", "SELECT", "fu")
	expect(t, c, "+OK", "SELECT", "fu", "PW")
	expect(t, c, "*[$new $-1 $in-d1]", "MGET", "k1", "k2", "k3")
	expect(t, c, ":2", "DBSIZE")
	m = client.ParseInfo(do(t, c, "NSINFO", "fu").Str)
	if m["mode"] != "userkey" || m["data_limits_bytes"] != "16" || m["public"] != "no" {
		t.Fatalf("NSINFO fu: %v", m)
	}
	if got := scanAll(t, c, "SCAN"); fmt.Sprint(got) != "[k1 k3]" {
		t.Fatalf("SCAN = %v", got)
	}
}

// checkFiles walks a namespace's files as an independent reader
// (zdb-index-dump style) and verifies headers, record chaining and every
// live record's payload CRC.
func checkFiles(t *testing.T, idxDir, datDir string) (live int) {
	t.Helper()
	ids, err := listFileIDs(idxDir, "i")
	if err != nil || len(ids) == 0 {
		t.Fatalf("no index files in %s: %v", idxDir, err)
	}
	for _, id := range ids {
		ib := []byte(readFile(t, filepath.Join(idxDir, fmt.Sprintf("i%d", id))))
		db := []byte(readFile(t, filepath.Join(datDir, fmt.Sprintf("d%d", id))))
		if string(ib[:4]) != "IDX0" || binary.LittleEndian.Uint32(ib[4:]) != 4 || binary.LittleEndian.Uint32(ib[24:]) != id ||
			!bytes.Equal(ib[8:24], make([]byte, 16)) {
			t.Fatalf("i%d header %x", id, ib[:29])
		}
		if string(db[:4]) != "DAT0" || binary.LittleEndian.Uint32(db[4:]) != 3 || binary.LittleEndian.Uint32(db[24:]) != id {
			t.Fatalf("d%d header %x", id, db[:28])
		}
		for off := 29; off < len(ib); {
			it := decodeIndexItem(ib[off:])
			key := ib[off+34 : off+34+int(it.idLength)]
			if it.flags&flagDeleted == 0 && it.dataID == id {
				de := decodeDataEntry(db[it.offset:])
				pk := db[it.offset+18 : it.offset+18+uint32(de.idLength)]
				payload := db[it.offset+18+uint32(de.idLength) : it.offset+18+uint32(de.idLength)+de.length]
				if !bytes.Equal(pk, key) || de.length != it.length || de.crc != it.crc || crc32c(payload) != it.crc {
					t.Fatalf("i%d@%d: record %+v does not match data entry %+v", id, off, it, de)
				}
				live++
			}
			off += 34 + int(it.idLength)
		}
	}
	return live
}

func TestWrittenFilesAreOfficialLayout(t *testing.T) {
	p := startZDB(t, "", "--datasize", "512k")
	c := p.dial("unix")
	expect(t, c, "+OK", "NSNEW", "s")
	expect(t, c, "+OK", "NSSET", "s", "mode", "seq")
	for i := 0; i < 20; i++ {
		expect(t, c, fmt.Sprintf("$k%d", i), "SET", fmt.Sprintf("k%d", i), strings.Repeat("u", 40000+i))
	}
	expect(t, c, "$k3", "SET", "k3", "again")
	expect(t, c, "+OK", "DEL", "k4")
	expect(t, c, "+OK", "SELECT", "s")
	for i := 0; i < 20; i++ {
		expect(t, c, seq(uint64(i)), "SET", "", strings.Repeat("s", 40000+i))
	}
	p.stop(syscall.SIGTERM)
	if n := checkFiles(t, filepath.Join(p.dir, "zdb-index", "default"), filepath.Join(p.dir, "zdb-data", "default")); n != 19 {
		t.Fatalf("default: %d live records, want 19", n)
	}
	if n := checkFiles(t, filepath.Join(p.dir, "zdb-index", "s"), filepath.Join(p.dir, "zdb-data", "s")); n != 20 {
		t.Fatalf("s: %d live records, want 20", n)
	}
	// seq records are fixed 42-byte slots at header + id*42 within a file
	ib := []byte(readFile(t, filepath.Join(p.dir, "zdb-index", "s", "i0")))
	if (len(ib)-29)%42 != 0 {
		t.Fatalf("seq index i0 size %d is not 29 + n*42", len(ib))
	}
	ns := readFile(t, filepath.Join(p.dir, "zdb-index", "s", "zdb-namespace"))
	if !bytes.Equal([]byte(ns), append([]byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, 's')) {
		t.Fatalf("zdb-namespace = %x", ns)
	}
}

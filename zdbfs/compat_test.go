package zdbfs

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

// Values below are built by hand from the spec (qsfs-stack.md §2.2,
// official-behaviour.md §3.1-3.2), not with package layout, so that they
// check the encoders independently.

func le64(v uint64) []byte { b := make([]byte, 8); binary.LittleEndian.PutUint64(b, v); return b }

func inodeBytes(mode uint32, uid, gid uint16, size uint64, links, t uint32) []byte {
	b := make([]byte, 44)
	binary.LittleEndian.PutUint32(b[0:], mode)
	binary.LittleEndian.PutUint16(b[16:], uid)
	binary.LittleEndian.PutUint16(b[18:], gid)
	binary.LittleEndian.PutUint64(b[20:], size)
	binary.LittleEndian.PutUint32(b[28:], links)
	binary.LittleEndian.PutUint32(b[32:], t)
	binary.LittleEndian.PutUint32(b[36:], t)
	binary.LittleEndian.PutUint32(b[40:], t)
	return b
}

func dirInodeBytes(mode uint32, size uint64, t uint32, slots map[int]uint64) []byte {
	b := inodeBytes(mode, 0, 0, size, 0, t) // 0-db-fs stores 0 links for directories
	for i := 0; i < 128; i++ {
		id, ok := slots[i]
		if !ok {
			id = 0x4242424242424242
		}
		b = append(b, le64(id)...)
	}
	return b
}

func dirlistBytes(id uint64, entries ...any) []byte {
	b := append(le64(id), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(entries)/2))
	for i := 0; i < len(entries); i += 2 {
		name, ino := entries[i].(string), entries[i+1].(uint64)
		e := make([]byte, 10)
		binary.LittleEndian.PutUint16(e, uint16(len(name)))
		binary.LittleEndian.PutUint64(e[2:], ino)
		b = append(append(append(b, e...), name...), 0)
	}
	return b
}

func header(magic string, size uint64) []byte {
	b := make([]byte, 24)
	copy(b, magic)
	b[6] = 1
	binary.LittleEndian.PutUint64(b[16:], size)
	return b
}

type seqNS struct {
	t *testing.T
	c *client.Conn
}

func (s seqNS) insert(v []byte) uint64 {
	s.t.Helper()
	k, err := s.c.Set(nil, v)
	must(s.t, err)
	id, err := client.SeqID(k)
	must(s.t, err)
	return id
}

func (s seqNS) update(id uint64, v []byte) {
	s.t.Helper()
	_, err := s.c.Set(client.SeqKey(id), v)
	must(s.t, err)
}

func (s seqNS) get(id uint64) []byte {
	s.t.Helper()
	v, err := s.c.Get(client.SeqKey(id))
	must(s.t, err)
	return v
}

func nsConn(t *testing.T, sock, ns, pass string) seqNS {
	c, err := client.Dial("unix", sock, 5*time.Second)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	must(t, c.Select(ns, pass))
	return seqNS{t, c}
}

// TestPreparedLayout prepares the three namespaces byte by byte as 0-db-fs
// 0.1.11 lays them out, mounts them, reads them, runs the workload on them
// and checks what zdbfs writes back.
func TestPreparedLayout(t *testing.T) {
	s := newStack(t)
	admin, err := client.Dial("unix", s.sock, 5*time.Second)
	must(t, err)
	defer admin.Close()
	for _, ns := range []string{"zdbfs-meta", "zdbfs-data", "zdbfs-temp"} {
		_, err := admin.Do("NSNEW", ns)
		must(t, err)
		_, err = admin.Do("NSSET", ns, "mode", "seq")
		must(t, err)
	}
	_, err = admin.Do("NSSET", "zdbfs-temp", "public", "0")
	must(t, err)
	_, err = admin.Do("NSSET", "zdbfs-temp", "password", "hello")
	must(t, err)

	meta := nsConn(t, s.sock, "zdbfs-meta", "")
	data := nsConn(t, s.sock, "zdbfs-data", "")
	temp := nsConn(t, s.sock, "zdbfs-temp", "hello")
	const size = 10 << 30
	if id := meta.insert(header("ZDBFSM", size)); id != 0 {
		t.Fatalf("meta header id %d", id)
	}
	data.insert(header("ZDBFSD", size))
	temp.insert(header("ZDBFST", size))
	const ts = 1700000000
	if id := meta.insert([]byte("X")); id != 1 {
		t.Fatalf("root id %d", id)
	}
	// root: ".", "..", "hello.txt", "sub", "ln"
	dot, dotdot := meta.insert([]byte("L")), meta.insert([]byte("L"))
	meta.update(dot, dirlistBytes(dot, ".", uint64(1)))
	meta.update(dotdot, dirlistBytes(dotdot, "..", uint64(1)))
	block := data.insert([]byte("hello\nabc"))
	file := meta.insert(append(append(inodeBytes(0o100644, 1000, 1000, 9, 1, ts), le64(1)...), byte(block), 0, 0, 0))
	sub := meta.insert([]byte("X"))
	sdot, sdotdot := meta.insert([]byte("L")), meta.insert([]byte("L"))
	meta.update(sdot, dirlistBytes(sdot, ".", uint64(1)))
	meta.update(sdotdot, dirlistBytes(sdotdot, "..", uint64(1)))
	meta.update(sub, dirInodeBytes(0o40755, 0, ts, map[int]uint64{46: sdot, 92: sdotdot}))
	link := meta.insert(append(inodeBytes(0o120777, 0, 0, 10, 1, ts), append([]byte("hello.txt"), 0)...))
	bucket := func(name string) int {
		sum := 0
		for _, c := range []byte(name) {
			sum += int(c)
		}
		return sum % 128
	}
	slots := map[int]uint64{46: dot, 92: dotdot}
	var dsize uint64
	for _, e := range []struct {
		name string
		ino  uint64
	}{{"hello.txt", file}, {"sub", sub}, {"ln", link}} {
		if _, ok := slots[bucket(e.name)]; ok {
			t.Fatalf("test names share a bucket")
		}
		id := meta.insert([]byte("L"))
		meta.update(id, dirlistBytes(id, e.name, e.ino))
		slots[bucket(e.name)] = id
		dsize += uint64(11 + len(e.name))
	}
	meta.update(1, dirInodeBytes(0o40755, dsize, ts, slots))

	s.mount()
	m := s.mnt
	if got := readFile(t, filepath.Join(m, "hello.txt")); got != "hello\nabc" {
		t.Errorf("hello.txt reads %q", got)
	}
	st := lstat(t, filepath.Join(m, "hello.txt"))
	if st.Uid != 1000 || st.Mode != 0o100644 || st.Mtim.Sec != ts || st.Ino != file {
		t.Errorf("hello.txt stat: %+v", st)
	}
	if target, err := os.Readlink(filepath.Join(m, "ln")); err != nil || target != "hello.txt" {
		t.Errorf("readlink: %q %v", target, err)
	}
	if n := lstat(t, m).Nlink; n != 3 {
		t.Errorf("root nlink %d, want 3 (computed for a 0-db-fs tree)", n)
	}
	ents, err := os.ReadDir(filepath.Join(m, "sub"))
	if err != nil || len(ents) != 0 {
		t.Errorf("sub: %v %v", ents, err)
	}

	// what zdbfs writes must be what 0-db-fs writes
	writeFile(t, filepath.Join(m, "sub/new"), "12345")
	must(t, os.Mkdir(filepath.Join(m, "sub/dd"), 0o750))
	s.unmount()
	subInode := meta.get(sub)
	if len(subInode) != 44+1024 {
		t.Fatalf("sub inode is %d bytes", len(subInode))
	}
	slot := binary.LittleEndian.Uint64(subInode[44+8*bucket("new"):])
	list := meta.get(slot)
	if len(list) != 16+11+3 || binary.LittleEndian.Uint64(list) != slot || binary.LittleEndian.Uint32(list[8:]) != 1 ||
		binary.LittleEndian.Uint16(list[16:]) != 3 || !bytes.Equal(list[26:], []byte("new\x00")) {
		t.Fatalf("dirlist of \"new\": % x", list)
	}
	ino := binary.LittleEndian.Uint64(list[18:])
	in := meta.get(ino)
	if len(in) != 56 || binary.LittleEndian.Uint32(in) != 0o100644 || binary.LittleEndian.Uint64(in[20:]) != 5 ||
		binary.LittleEndian.Uint32(in[28:]) != 1 || binary.LittleEndian.Uint64(in[44:]) != 1 {
		t.Fatalf("inode of \"new\": % x", in)
	}
	if got := data.get(uint64(binary.LittleEndian.Uint32(in[52:]))); string(got) != "12345" {
		t.Fatalf("data block of \"new\": %q", got)
	}
	dslot := binary.LittleEndian.Uint64(subInode[44+8*bucket("dd"):])
	dino := binary.LittleEndian.Uint64(meta.get(dslot)[18:])
	din := meta.get(dino)
	if len(din) != 1068 || binary.LittleEndian.Uint32(din) != syscall.S_IFDIR|0o750 {
		t.Fatalf("inode of \"dd\": % x", din[:44])
	}
	dd := meta.get(binary.LittleEndian.Uint64(din[44+8*46:]))
	if !bytes.Equal(dd, dirlistBytes(binary.LittleEndian.Uint64(din[44+8*46:]), ".", sub)) {
		t.Fatalf("\".\" of \"dd\": % x", dd)
	}

	// the same workload runs on the prepared set
	s.mount()
	workload(t, filepath.Join(m, "sub"), 8<<20)
	before := tree(t, m)
	s.unmount()
	s.mount()
	diffTrees(t, before, tree(t, m))
}

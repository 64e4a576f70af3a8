package zdbfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdb/client"
	"github.com/sirupsen/logrus"
)

// The direct write path (write_direct.go) is tested in process, calling the
// FUSE operations of an FS over a real `qsfs zdb` (no mount needed), so that
// writes, truncates and reads of the same blocks really run at once, and
// through a mount for kill -9 after fsync.

// zdbOnly starts a zdb on a unix socket in a private directory.
func zdbOnly(t *testing.T) (dir, sock string) {
	t.Helper()
	dir = t.TempDir()
	sock = filepath.Join(dir, "zdb.sock")
	startZdbAt(t, dir, sock)
	return dir, sock
}

// startZdbAt starts zdb over dir, listening on sock, and waits for it.
func startZdbAt(t *testing.T, dir, sock string) *proc {
	t.Helper()
	os.Remove(sock)
	p := start(t, filepath.Join(dir, "zdb.log"), "zdb", "--socket", sock,
		"--data", filepath.Join(dir, "data"), "--index", filepath.Join(dir, "index"))
	t.Cleanup(func() { p.stop(syscall.SIGTERM) })
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := client.Dial("unix", sock, time.Second); err == nil {
			err = c.Ping()
			c.Close()
			if err == nil {
				return p
			}
		}
		if !p.alive() {
			break
		}
	}
	t.Fatalf("zdb did not come up:\n%s", p.output())
	return nil
}

// testFS is an FS served in process over zdb at sock.
type testFS struct {
	*FS
	t *testing.T
}

func openTestFS(t *testing.T, sock string, opts string) *testFS {
	t.Helper()
	o, err := ParseOptions([]string{"-o", "autons,unix=" + sock + opts, filepath.Join(t.TempDir(), "mnt")})
	must(t, err)
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	log := logger.WithField("test", t.Name())
	b, size, err := openBackends(o, log)
	must(t, err)
	fs := newFS(o, b, size, log)
	if _, e := fs.node(rootIno); e != 0 {
		t.Fatalf("load root: %v", e)
	}
	fs.nodes[rootIno].lookups = 1 << 62
	return &testFS{fs, t}
}

func hdr(ino uint64) fuse.InHeader { return fuse.InHeader{NodeId: ino} }

func (f *testFS) create(name string) uint64 {
	f.t.Helper()
	var out fuse.CreateOut
	if s := f.Create(nil, &fuse.CreateIn{InHeader: hdr(rootIno), Mode: 0o644}, name, &out); !s.Ok() {
		f.t.Fatalf("create %s: %v", name, s)
	}
	return out.NodeId
}

func (f *testFS) lookup(name string) uint64 {
	f.t.Helper()
	var out fuse.EntryOut
	if s := f.Lookup(nil, &fuse.InHeader{NodeId: rootIno}, name, &out); !s.Ok() || out.NodeId == 0 {
		f.t.Fatalf("lookup %s: %v", name, s)
	}
	return out.NodeId
}

func (f *testFS) write(ino uint64, off int64, data []byte) error {
	k, s := f.Write(nil, &fuse.WriteIn{InHeader: hdr(ino), Offset: uint64(off), Size: uint32(len(data))}, data)
	if !s.Ok() {
		return fmt.Errorf("write %d bytes at %d: %w", len(data), off, syscall.Errno(s))
	}
	if int(k) != len(data) {
		return fmt.Errorf("write %d bytes at %d: wrote %d", len(data), off, k)
	}
	return nil
}

func (f *testFS) truncate(ino uint64, size int64) error {
	var out fuse.AttrOut
	if s := f.SetAttr(nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		InHeader: hdr(ino), Valid: fuse.FATTR_SIZE, Size: uint64(size)}}, &out); !s.Ok() {
		return fmt.Errorf("truncate to %d: %w", size, syscall.Errno(s))
	}
	return nil
}

func (f *testFS) size(ino uint64) int64 {
	var out fuse.AttrOut
	if s := f.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(ino)}, &out); !s.Ok() {
		f.t.Fatalf("getattr %d: %v", ino, s)
	}
	return int64(out.Size)
}

// contents reads the whole file in 1 MiB reads.
func (f *testFS) contents(ino uint64) ([]byte, error) {
	size := f.size(ino)
	out := make([]byte, 0, size)
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		r, s := f.Read(nil, &fuse.ReadIn{InHeader: hdr(ino), Offset: uint64(off), Size: uint32(len(buf))}, buf)
		if !s.Ok() {
			return nil, fmt.Errorf("read at %d: %w", off, syscall.Errno(s))
		}
		b, s := r.Bytes(buf)
		if !s.Ok() {
			return nil, fmt.Errorf("read at %d: %w", off, syscall.Errno(s))
		}
		if len(b) == 0 {
			break // truncated meanwhile: callers compare the size
		}
		out = append(out, b...)
		off += int64(len(b))
	}
	return out, nil
}

func (f *testFS) sync() {
	f.t.Helper()
	if s := f.Fsync(nil, &fuse.FsyncIn{}); !s.Ok() {
		f.t.Fatalf("fsync: %v", s)
	}
}

// cached reports whether block idx of ino is in the block cache, and dirty.
func (f *testFS) cached(ino uint64, idx uint32) (cached, dirty bool) {
	n, _ := f.node(ino)
	n.mu.Lock()
	defer n.mu.Unlock()
	b := n.cache[idx]
	return b != nil, b != nil && b.dirty
}

// model is the expected contents of a file.
type model []byte

func (m model) write(off int64, data []byte) model {
	if end := off + int64(len(data)); end > int64(len(m)) {
		m = append(m, make([]byte, end-int64(len(m)))...)
	}
	copy(m[off:], data)
	return m
}

func (m model) truncate(size int64) model {
	if size <= int64(len(m)) {
		return m[:size]
	}
	return append(m, make([]byte, size-int64(len(m)))...)
}

func (m model) clone() model { return append(model(nil), m...) }

func fill(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %d (block %d): %#x, want %#x", what, i, i/blockSize, got[i], want[i])
		}
	}
}

// TestDirectWritePaths checks which blocks go straight to zdb and which
// through the cache: whole aligned blocks skip the cache, partial blocks,
// dirty cached blocks and blocks being flushed are copied, a clean cached
// copy of a rewritten block is dropped; the contents survive a restart.
func TestDirectWritePaths(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	ino := f.create("f")
	var m model

	// 1 MiB aligned: eight whole blocks, none cached afterwards
	d := fill(1<<20, 1)
	must(t, f.write(ino, 0, d))
	m = m.write(0, d)
	for idx := uint32(0); idx < 8; idx++ {
		if c, _ := f.cached(ino, idx); c {
			t.Errorf("block %d of an aligned 1 MiB write is in the cache", idx)
		}
	}
	n, _ := f.node(ino)
	n.mu.Lock()
	for idx, id := range n.blocks {
		if id == 0 {
			t.Errorf("block %d has no data id after the write returned", idx)
		}
	}
	n.mu.Unlock()

	// unaligned 1 MiB: partial head and tail blocks are cached dirty, the
	// whole blocks in between are not
	d = fill(1<<20, 2)
	must(t, f.write(ino, 1<<20+64<<10, d))
	m = m.write(1<<20+64<<10, d)
	if c, _ := f.cached(ino, 8); !c {
		t.Error("partial head block 8 is not in the cache")
	}
	if _, dirty := f.cached(ino, 16); !dirty {
		t.Error("partial tail block 16 is not dirty in the cache")
	}
	for idx := uint32(9); idx < 16; idx++ {
		if c, _ := f.cached(ino, idx); c {
			t.Errorf("whole block %d of an unaligned write is in the cache", idx)
		}
	}

	// overwrite of a cached dirty block: copied into the cache, the others direct
	d = fill(4096, 3)
	must(t, f.write(ino, 3<<20+100, d))
	m = m.write(3<<20+100, d)
	d = fill(1<<20, 4)
	must(t, f.write(ino, 3<<20, d))
	m = m.write(3<<20, d)
	if c, _ := f.cached(ino, 24); !c {
		t.Error("rewritten dirty block 24 is not in the cache")
	}
	got, err := f.contents(ino)
	must(t, err)
	sameBytes(t, "after writes", got, m)

	// a clean cached block rewritten whole: its stale copy is dropped
	f.sync()
	got, err = f.contents(ino) // caches every block clean
	must(t, err)
	sameBytes(t, "after fsync", got, m)
	if c, dirty := f.cached(ino, 2); !c || dirty {
		t.Fatalf("block 2 after a read: cached %v dirty %v, want clean in the cache", c, dirty)
	}
	d = fill(1<<20, 5)
	must(t, f.write(ino, 0, d))
	m = m.write(0, d)
	if c, _ := f.cached(ino, 2); c {
		t.Error("stale clean copy of block 2 still cached after a direct rewrite")
	}
	got, err = f.contents(ino)
	must(t, err)
	sameBytes(t, "after rewriting cached blocks", got, m)

	// what zdb has after a restart
	f.sync()
	must(t, f.shutdown())
	f = openTestFS(t, sock, "")
	got, err = f.contents(f.lookup("f"))
	must(t, err)
	sameBytes(t, "after restart", got, m)
	must(t, f.shutdown())
}

// TestDirectWriteCompletesBlock checks that a WRITE that completes a
// cached partial block (the kernel's 1 MiB WRITEs start at any 4 KiB
// boundary) sends that block in the same pipeline as its whole blocks,
// not through write-behind: it is clean when the WRITE returns, and zdb
// gave it the id right before the WRITE's first whole block.
func TestDirectWriteCompletesBlock(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	ino := f.create("f")
	var m model
	// [64 KiB, 1 MiB + 64 KiB): block 0 and block 8 partial
	d := fill(1<<20, 1)
	must(t, f.write(ino, 64<<10, d))
	m = m.write(64<<10, d)
	if _, dirty := f.cached(ino, 8); !dirty {
		t.Fatal("partial tail block 8 is not dirty in the cache")
	}
	// [1 MiB + 64 KiB, 2 MiB + 64 KiB): completes block 8
	d = fill(1<<20, 2)
	must(t, f.write(ino, 1<<20+64<<10, d))
	m = m.write(1<<20+64<<10, d)
	if c, dirty := f.cached(ino, 8); !c || dirty {
		t.Errorf("completed block 8 when the WRITE returned: cached %v dirty %v, want clean", c, dirty)
	}
	f.sync()
	n, _ := f.node(ino)
	n.mu.Lock()
	ids := append([]uint32(nil), n.blocks...)
	n.mu.Unlock()
	if len(ids) < 16 {
		t.Fatalf("%d blocks, want at least 16", len(ids))
	}
	for idx := 9; idx < 16; idx++ {
		if ids[idx] != ids[8]+uint32(idx-8) {
			t.Fatalf("block ids 8..15 = %v, want consecutive (block 8 sent with the WRITE's whole blocks)", ids[8:16])
		}
	}
	got, err := f.contents(ino)
	must(t, err)
	sameBytes(t, "after the writes", got, m)
	must(t, f.shutdown())
}

// raceOp is one operation of TestDirectWriteRaces. A write is applied
// block by block, in ascending order, each block at once (chunks); a
// truncate is one chunk.
type raceOp struct {
	name   string
	chunks []func(m model) model
	run    func(f *testFS, ino uint64) error
}

func (op raceOp) apply(m model) model {
	for _, c := range op.chunks {
		m = c(m)
	}
	return m
}

func writeOp(off int64, d []byte) raceOp {
	op := raceOp{name: fmt.Sprintf("write %d at %d", len(d), off),
		run: func(f *testFS, ino uint64) error { return f.write(ino, off, d) }}
	for p := off; p < off+int64(len(d)); {
		e := min((p/blockSize+1)*blockSize, off+int64(len(d)))
		chunk := d[p-off : e-off]
		at := p
		op.chunks = append(op.chunks, func(m model) model { return m.write(at, chunk) })
		p = e
	}
	return op
}

func randomWrite(r *rand.Rand, seed int64, maxSize int64) raceOp {
	switch k := r.Intn(7); {
	case k < 5: // whole aligned blocks (direct), sometimes with partial ends
		off := int64(r.Intn(int(maxSize/blockSize))) * blockSize
		if k == 4 {
			off += int64(r.Intn(blockSize))
		}
		return writeOp(off, fill((1+r.Intn(8))*blockSize, seed))
	default: // a small write (into the cache)
		return writeOp(int64(r.Intn(int(maxSize))), fill(1+r.Intn(8192), seed))
	}
}

func randomTruncate(r *rand.Rand, maxSize int64) raceOp {
	size := int64(r.Intn(int(maxSize)))
	if r.Intn(2) == 0 {
		size = size / blockSize * blockSize
	}
	return raceOp{name: fmt.Sprintf("truncate to %d", size),
		chunks: []func(m model) model{func(m model) model { return m.truncate(size) }},
		run:    func(f *testFS, ino uint64) error { return f.truncate(ino, size) }}
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{nil}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			out = append(out, append(append(append([]int(nil), p[:i]...), n-1), p[i:]...))
		}
	}
	return out
}

// raceRound runs ops at once, plus a flush or a whole-file read, and
// returns what the file holds afterwards.
func raceRound(t *testing.T, f *testFS, ino uint64, round int, what string, ops []raceOp) []byte {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(ops)+1)
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = op.run(f, ino)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		switch round % 3 {
		case 0:
			errs[len(ops)] = f.flush()
		case 1:
			_, errs[len(ops)] = f.contents(ino) // may race a truncate: only errors count
		}
	}()
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	got, err := f.contents(ino)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return got
}

// TestDirectWriteRaces runs writes of the same blocks at the same time, or
// a truncate during a write, with write-back and reads going on, and checks
// each outcome against a model: after concurrent writes every block is what
// one order of the writes gives; after a truncate during a write the file
// is what the truncate gives at one point between the write's blocks. So no
// direct write is lost, and no block dropped by a truncate comes back.
// Every 40 rounds the filesystem is restarted from zdb.
func TestDirectWriteRaces(t *testing.T) {
	_, sock := zdbOnly(t)
	for _, opts := range []string{"", ",nocache", ",cachesize=16"} {
		t.Run("opts="+opts, func(t *testing.T) {
			f := openTestFS(t, sock, opts)
			name := fmt.Sprintf("race%d", len(opts))
			ino := f.create(name)
			r := rand.New(rand.NewSource(int64(len(opts))))
			const maxSize = 4 << 20
			m := model(nil)
			rounds := 160
			if opts == ",nocache" {
				rounds = 40 // every write is a full write-back
			}
			for round := 0; round < rounds; round++ {
				var ops []raceOp
				var names []string
				truncating := round%3 == 2
				if truncating {
					ops = []raceOp{randomTruncate(r, maxSize), randomWrite(r, int64(round), maxSize)}
				} else {
					for i := 0; i < 2+round%2; i++ {
						ops = append(ops, randomWrite(r, int64(round*3+i), maxSize))
					}
				}
				for _, op := range ops {
					names = append(names, op.name)
				}
				what := fmt.Sprintf("round %d (%s)", round, strings.Join(names, " | "))
				got := raceRound(t, f, ino, round, what, ops)
				if truncating {
					// the truncate happened before, between or after the
					// write's blocks
					w, tr := ops[1], ops[0]
					ok := false
					for i := 0; i <= len(w.chunks) && !ok; i++ {
						o := m.clone()
						for _, c := range w.chunks[:i] {
							o = c(o)
						}
						o = tr.apply(o)
						for _, c := range w.chunks[i:] {
							o = c(o)
						}
						ok = bytes.Equal(got, o)
					}
					if !ok {
						t.Fatalf("%s: contents match no point of the truncate", what)
					}
				} else {
					var orders []model
					for _, perm := range permutations(len(ops)) {
						o := m.clone()
						for _, i := range perm {
							o = ops[i].apply(o)
						}
						orders = append(orders, o)
					}
					if len(got) != len(orders[0]) {
						t.Fatalf("%s: size %d, want %d", what, len(got), len(orders[0]))
					}
					for off := 0; off < len(got); off += blockSize {
						g := got[off:min(off+blockSize, len(got))]
						ok := false
						for _, o := range orders {
							ok = ok || bytes.Equal(g, o[off:min(off+blockSize, len(o))])
						}
						if !ok {
							t.Fatalf("%s: block %d matches no order", what, off/blockSize)
						}
					}
				}
				m = model(got)
				if round%40 == 39 {
					f.sync()
					must(t, f.shutdown())
					f = openTestFS(t, sock, opts)
					ino = f.lookup(name)
					got, err := f.contents(ino)
					must(t, err)
					sameBytes(t, fmt.Sprintf("round %d after restart", round), got, m)
				}
			}
			must(t, f.shutdown())
		})
	}
}

// TestDirectWriteConcurrent has many writers send whole blocks of one file
// at once (their own regions and a shared one) while others read it; every
// block ends up written whole by one writer, in memory and in zdb.
func TestDirectWriteConcurrent(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, ",cachesize=32")
	ino := f.create("shared")
	const writers, region, shared = 8, 2 << 20, 16 << 20
	var pats [writers][8][]byte
	known := map[[2]string]bool{} // (block index mod 8, contents) of every write
	for w := range pats {
		for i := range pats[w] {
			pats[w][i] = fill(1<<20, int64(w*1000+i))
			for k := 0; k < 8; k++ {
				known[[2]string{fmt.Sprint(k), string(pats[w][i][k*blockSize : (k+1)*blockSize])}] = true
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*2)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				off := int64(w*region + i<<20)
				if i >= 2 {
					// the shared 2 MiB: everyone rewrites them
					off = shared + int64(i%2)<<20
				}
				if err := f.write(ino, off, pats[w][i]); err != nil {
					errs <- err
					return
				}
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				if _, err := f.contents(ino); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(what string, got []byte) {
		t.Helper()
		if len(got) != shared+2<<20 {
			t.Fatalf("%s: size %d, want %d", what, len(got), shared+2<<20)
		}
		for off := 0; off < len(got); off += blockSize {
			if !known[[2]string{fmt.Sprint(off / blockSize % 8), string(got[off : off+blockSize])}] {
				t.Fatalf("%s: block %d is not one writer's block", what, off/blockSize)
			}
		}
	}
	got, err := f.contents(ino)
	must(t, err)
	check("in memory", got)
	f.sync()
	must(t, f.shutdown())
	f = openTestFS(t, sock, "")
	again, err := f.contents(f.lookup("shared"))
	must(t, err)
	sameBytes(t, "after restart", again, got)
	must(t, f.shutdown())
}

// TestDirectWriteENOSPC: blocks zdb refuses stay dirty in the cache and
// fsync reports ENOSPC.
func TestDirectWriteENOSPC(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	c, err := client.Dial("unix", sock, 5*time.Second)
	must(t, err)
	_, err = c.Do("NSSET", "zdbfs-data", "maxsize", "2000000")
	c.Close()
	must(t, err)
	ino := f.create("big")
	d := fill(1<<20, 9)
	for i := int64(0); i < 4; i++ {
		must(t, f.write(ino, i<<20, d)) // answered: kept in the cache
	}
	err = f.flush()
	if errno(err) != syscall.ENOSPC {
		t.Fatalf("fsync after writing 4 MiB into a 2 MB namespace: %v, want ENOSPC", err)
	}
	got, err := f.contents(ino)
	must(t, err)
	sameBytes(t, "unstored data still readable", got, bytes.Repeat(d, 4))
}

// TestDirectWriteZdbRestart kills zdb while direct writes are on their
// way and starts it again: the writes are retried on new connections and
// what fsync returned for is in zdb.
func TestDirectWriteZdbRestart(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "zdb.sock")
	z := startZdbAt(t, dir, sock)
	f := openTestFS(t, sock, "")
	ino := f.create("f")
	var m model
	done := make(chan error)
	var mu sync.Mutex
	go func() {
		for i := int64(0); i < 48; i++ {
			d := fill(1<<20, 100+i)
			if err := f.write(ino, (i%16)<<20, d); err != nil {
				done <- err
				return
			}
			mu.Lock()
			m = m.write((i%16)<<20, d)
			mu.Unlock()
		}
		done <- nil
	}()
	time.Sleep(20 * time.Millisecond)
	z.stop(syscall.SIGKILL)
	startZdbAt(t, dir, sock)
	must(t, <-done)
	f.sync()
	must(t, f.shutdown())
	f = openTestFS(t, sock, "")
	got, err := f.contents(f.lookup("f"))
	must(t, err)
	mu.Lock()
	defer mu.Unlock()
	sameBytes(t, "after the zdb restart", got, m)
	must(t, f.shutdown())
}

// TestDirectWriteKillAfterFsync writes and rewrites a file with 1 MiB
// writes through a mount, fsyncs, kills zdbfs with SIGKILL and finds the
// fsynced contents after a remount.
func TestDirectWriteKillAfterFsync(t *testing.T) {
	s := newStack(t)
	s.mount()
	path := filepath.Join(s.mnt, "data")
	writeRandom(t, path, 24<<20, 11)
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	// rewrite whole blocks in place and append, then fsync
	for i, off := range []int64{4 << 20, 5 << 20, 11<<20 + 4096, 24 << 20} {
		_, err := fh.WriteAt(fill(1<<20, int64(20+i)), off)
		must(t, err)
	}
	must(t, fh.Sync())
	must(t, fh.Close())
	want := fileSum(t, path)
	s.crash()
	s.mount()
	if got := fileSum(t, path); got != want {
		t.Fatalf("fsynced file has sha256 %s after kill -9, want %s", got, want)
	}
	h := sha256.Sum256(nil)
	if want == hex.EncodeToString(h[:]) {
		t.Fatal("the file is empty")
	}
}

package zdb

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qsfs/qsfs/zdb/client"
)

// entrySpan is the bytes one 128 KiB entry with a 8-byte key takes in a
// data file, as zdbfs writes them.
const entrySpan = dataEntrySize + 8 + 128<<10

// TestReadAheadPlan checks the read-ahead decisions: nothing for the first
// GETs of a stream or for scattered GETs, one window ahead once the GETs run
// sequentially, whole aligned chunks, steps of at least raStep, GETs out of
// order within the stream's bounds, a window clipped at the end of the
// file and nothing past it, a jump starting a new stream, and the start of
// the next file continuing a stream that reached the end of its file.
func TestReadAheadPlan(t *testing.T) {
	const size = 256 << 20
	get := func(r *readAhead, k int) (int64, int64) {
		return r.plan(int64(dataHeaderSize+k*entrySpan), 128<<10, size)
	}

	t.Run("sequential", func(t *testing.T) {
		var r readAhead
		for k := 0; k < raMinRun-1; k++ {
			if from, to := get(&r, k); from != to {
				t.Fatalf("GET %d of a new stream asked for [%d, %d)", k, from, to)
			}
		}
		from, to := get(&r, raMinRun-1)
		if from != 0 || to != (r.end+raWindow+raChunk-1)&^(raChunk-1) || to < r.end+raWindow {
			t.Fatalf("stream of %d GETs ending at %d asked for [%d, %d), want [0, end+window rounded up to a chunk)", raMinRun, r.end, from, to)
		}
		if r.pos != 0 || r.asked != to {
			t.Fatalf("prefetcher at %d up to %d, want 0 up to %d", r.pos, r.asked, to)
		}
		asked, steps := to, 0
		for k := raMinRun; k < 400; k++ {
			from, to := get(&r, k)
			if from == to {
				continue
			}
			steps++
			if from != asked || to-from < raStep || to%raChunk != 0 || to < r.end+raWindow {
				t.Fatalf("GET %d (stream end %d): asked for [%d, %d) after %d, want a step of at least %d from there", k, r.end, from, to, asked, raStep)
			}
			asked = to
		}
		if steps == 0 || r.asked-r.end > raWindow+raStep+raChunk {
			t.Fatalf("%d steps, window %d ahead of the stream", steps, r.asked-r.end)
		}
	})

	t.Run("scattered", func(t *testing.T) {
		var r readAhead
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 2000; i++ {
			k := rng.IntN(size / entrySpan)
			if from, to := get(&r, k); from != to {
				t.Fatalf("random GET %d (entry %d) asked for [%d, %d)", i, k, from, to)
			}
		}
		if r.asked != 0 {
			t.Fatalf("random GETs left %d asked", r.asked)
		}
	})

	t.Run("out of order", func(t *testing.T) {
		var r readAhead
		// two connections, each taking half of the blocks of a READ of 8
		// blocks, and the READs in flight finishing out of order
		order := []int{0, 4, 1, 5, 2, 6, 3, 7, 16, 20, 8, 12, 17, 9, 21, 13}
		for i, k := range order {
			get(&r, k)
			if i >= raMinRun-1 && !r.established() {
				t.Fatalf("GET %d (entry %d) broke the stream", i, k)
			}
		}
		// a straggler far behind the front still belongs to the stream
		for k := 22; k <= 600; k++ {
			get(&r, k)
		}
		get(&r, 600-raBehind/entrySpan+8)
		if !r.established() {
			t.Fatal("a GET within raBehind of the front broke the stream")
		}
		// a jump far ahead starts a new stream, which asks for nothing yet
		if from, to := get(&r, 1900); from != to || r.established() || r.asked != 0 {
			t.Fatalf("jump: asked [%d, %d), established %v, asked up to %d", from, to, r.established(), r.asked)
		}
	})

	t.Run("end of file", func(t *testing.T) {
		var r readAhead
		const small = 10<<20 + 12345
		var last int64
		for k := 0; dataHeaderSize+(k+1)*entrySpan <= small; k++ {
			from, to := r.plan(int64(dataHeaderSize+k*entrySpan), 128<<10, small)
			if to > small {
				t.Fatalf("GET %d asked for [%d, %d) past the end %d", k, from, to, small)
			}
			if from != to {
				last = to
			}
		}
		if last != small || r.asked != small {
			t.Fatalf("asked up to %d (last range end %d), want the file's end %d", r.asked, last, small)
		}
		if from, to := r.plan(small-entrySpan, 128<<10, small); from != to {
			t.Fatalf("GET at the end asked for [%d, %d) again", from, to)
		}
	})

	t.Run("next file", func(t *testing.T) {
		var r readAhead
		r.follow(40 << 20)
		if !r.established() || r.pos != 0 || r.asked != raWindow {
			t.Fatalf("followed file: established %v, prefetcher at %d up to %d, want 0 up to %d", r.established(), r.pos, r.asked, raWindow)
		}
		// its first GETs go on from there
		for k := 0; k < 3; k++ {
			get(&r, k)
		}
		if !r.established() || r.asked < raWindow {
			t.Fatalf("first GETs of a followed file: established %v, asked %d", r.established(), r.asked)
		}
		var short readAhead
		short.follow(3 << 20)
		if short.asked != 3<<20 {
			t.Fatalf("followed file of 3 MiB asked up to %d", short.asked)
		}
		// a file with its own stream keeps it
		own := readAhead{run: raMinRun + 5, end: 30 << 20, asked: 46 << 20, pos: 40 << 20}
		own.follow(256 << 20)
		if own.end != 30<<20 || own.asked != 46<<20 || own.pos != 40<<20 {
			t.Fatalf("follow changed a file's own stream: end %d, asked %d, at %d", own.end, own.asked, own.pos)
		}
	})
}

// resident reports which pages of f's [0, size) are in the page cache.
func resident(t *testing.T, f *os.File, size int) []byte {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (size+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	return vec
}

// coldFile writes a file of size bytes and drops it from the page cache,
// or skips when the file system keeps it there (tmpfs).
func coldFile(t *testing.T, path string, size int) *os.File {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	for _, in := range resident(t, f, size) {
		if in&1 != 0 {
			t.Skipf("%s stays in the page cache after FADV_DONTNEED (tmpfs?)", path)
		}
	}
	return f
}

// idle waits until f's prefetcher has stopped.
func idle(t *testing.T, f *os.File) {
	t.Helper()
	r := readAheadOf(f)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		busy := r.busy
		r.mu.Unlock()
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("prefetcher still running after 30s")
		}
	}
}

// countIn counts the resident pages of [from, to).
func countIn(vec []byte, from, to int64) (in, pages int) {
	ps := int64(os.Getpagesize())
	for p := from / ps; p < (to+ps-1)/ps && p < int64(len(vec)); p++ {
		pages++
		if vec[p]&1 != 0 {
			in++
		}
	}
	return in, pages
}

// TestReadAheadPrefetch runs the prefetcher on real files: sequential GETs
// get the window ahead of them into the page cache and nothing near the end
// of a large file; scattered GETs read nothing; a stream reaching the end of
// a file reads the start of the next one; a closed file stops its
// prefetcher and closes its descriptor.
func TestReadAheadPrefetch(t *testing.T) {
	dir := t.TempDir()
	const size = 64 << 20
	f := coldFile(t, filepath.Join(dir, "d0"), size)
	t.Cleanup(func() { forgetReadAhead(f) })

	// scattered GETs
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		readAheadFor(filePayload{f: f, off: int64(rng.IntN(size - 128<<10)), n: 128 << 10, size: size})
	}
	idle(t, f)
	if in, _ := countIn(resident(t, f, size), 0, size); in != 0 {
		t.Fatalf("scattered GETs read %d pages ahead", in)
	}

	// sequential GETs over the first 8 MiB
	var end int64
	for k := 0; int64(dataHeaderSize+(k+1)*entrySpan) <= 8<<20; k++ {
		off := int64(dataHeaderSize + k*entrySpan)
		readAheadFor(filePayload{f: f, off: off, n: 128 << 10, size: size})
		end = off + 128<<10
	}
	idle(t, f)
	vec := resident(t, f, size)
	if in, pages := countIn(vec, 0, end+raWindow); in != pages {
		t.Fatalf("after sequential GETs up to %d: %d of the %d pages up to %d resident", end, in, pages, end+raWindow)
	}
	// the kernel reads a little further on its own, never to the end
	if in, _ := countIn(vec, size-16<<20, size); in != 0 {
		t.Fatalf("%d pages of the last 16 MiB resident after GETs up to %d", in, end)
	}
	r := readAheadOf(f)
	r.mu.Lock()
	own := r.own
	r.mu.Unlock()
	if own == nil {
		t.Fatal("prefetcher has no descriptor of its own")
	}

	// a stream reaching the end of a file goes on at the start of the next
	next := coldFile(t, filepath.Join(dir, "d1"), 32<<20)
	t.Cleanup(func() { forgetReadAhead(next) })
	for off := int64(size - 20<<20); off+128<<10 <= size; off += 128 << 10 {
		readAheadFor(filePayload{f: f, off: off, n: 128 << 10, size: size, next: next, nextSize: 32 << 20})
	}
	idle(t, f)
	idle(t, next)
	if in, pages := countIn(resident(t, f, size), size-20<<20, size); in != pages {
		t.Fatalf("end of the file: %d of %d pages resident", in, pages)
	}
	if in, pages := countIn(resident(t, next, 32<<20), 0, raWindow); in != pages {
		t.Fatalf("start of the next file: %d of %d pages resident", in, pages)
	}

	// closing the file stops its prefetcher and closes its descriptor
	forgetReadAhead(f)
	r.mu.Lock()
	stopped, busy, left := r.stopped, r.busy, r.own
	r.mu.Unlock()
	if !stopped || busy || left != nil {
		t.Fatalf("after close: stopped %v, busy %v, descriptor %v", stopped, busy, left)
	}
	if _, err := own.Stat(); err == nil {
		t.Fatal("the prefetcher's descriptor is still open")
	}
	if _, ok := readAheads.Load(f); ok {
		t.Fatal("state of a closed file kept")
	}
}

// TestReadAheadGets reads large values back in order through the server
// while the prefetcher runs: over two connections taking turns, across
// data file rotations, then again after a data file was cut short (the
// prefetcher stops on it; the GETs of the cut values answer Internal Error
// and the others still answer their values).
func TestReadAheadGets(t *testing.T) {
	p := startZDB(t, "", "--datasize", "8M")
	c1, c2 := p.dial("unix"), p.dial("unix")
	expect(t, c1, "+OK", "NSNEW", "ra")
	expect(t, c1, "+OK", "NSSET", "ra", "mode", "seq")
	expect(t, c1, "+OK", "SELECT", "ra")
	expect(t, c2, "+OK", "SELECT", "ra")
	const n = 200 // 25 MiB: four data files
	vals := make([][]byte, n)
	for i := range vals {
		v := bytes.Repeat([]byte{byte(i)}, 128<<10)
		copy(v, fmt.Sprint(i))
		vals[i] = v
		if err := c1.Send("SET", []byte(nil), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range vals {
		if r, err := c1.Receive(); err != nil || r.Err() != nil {
			t.Fatalf("SET %d: %v %v", i, err, r.Err())
		}
	}
	files, _ := filepath.Glob(filepath.Join(p.dir, "zdb-data", "ra", "d*"))
	if len(files) < 3 {
		t.Fatalf("%d data files, want rotations", len(files))
	}

	readAll := func(round string, want func(i int) (string, []byte)) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for h, c := range []*client.Conn{c1, c2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// connection h takes blocks of 4 in turn, pipelined
				for start := 4 * h; start < n; start += 8 {
					end := min(start+4, n)
					for i := start; i < end; i++ {
						if err := c.Send("GET", client.SeqKey(uint64(i))); err != nil {
							errs[h] = err
							return
						}
					}
					if err := c.Flush(); err != nil {
						errs[h] = err
						return
					}
					for i := start; i < end; i++ {
						r, err := c.Receive()
						if err != nil {
							errs[h] = fmt.Errorf("GET %d: %w", i, err)
							return
						}
						wantErr, wantVal := want(i)
						switch {
						case wantErr != "" && (r.Err() == nil || r.Err().Error() != wantErr):
							errs[h] = fmt.Errorf("GET %d: got %v, want error %q", i, r.Err(), wantErr)
							return
						case wantErr == "" && (r.Err() != nil || !bytes.Equal(r.Str, wantVal)):
							errs[h] = fmt.Errorf("GET %d: %v, %d bytes, want value %d", i, r.Err(), len(r.Str), i)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", round, err)
			}
		}
	}
	readAll("first read", func(i int) (string, []byte) { return "", vals[i] })
	readAll("second read", func(i int) (string, []byte) { return "", vals[i] })

	// cut the second data file in the middle
	d1 := filepath.Join(p.dir, "zdb-data", "ra", "d1")
	st, err := os.Stat(d1)
	if err != nil {
		t.Fatal(err)
	}
	cut := st.Size() / 2
	if err := os.Truncate(d1, cut); err != nil {
		t.Fatal(err)
	}
	// which values lay past the cut: d1 holds the values after d0's
	d0, err := os.Stat(filepath.Join(p.dir, "zdb-data", "ra", "d0"))
	if err != nil {
		t.Fatal(err)
	}
	inD0 := int((d0.Size() - dataHeaderSize) / entrySpan)
	inD1 := int((st.Size() - dataHeaderSize) / entrySpan)
	readAll("after the cut", func(i int) (string, []byte) {
		if i >= inD0 && i < inD0+inD1 && int64(dataHeaderSize+(i-inD0+1)*entrySpan) > cut {
			return "Internal Error", nil
		}
		return "", vals[i]
	})
}

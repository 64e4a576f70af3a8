package zdb

import (
	"os"
	"sync"
)

// Read-ahead of data files for sequential GETs. A client reading a file
// stored in zdb sends GETs of consecutive entries, over several connections
// at once (zdbfs spreads the GETs of one READ over two and has several READs
// in flight), so the kernel sees the shared data-file descriptor read in
// 128 KiB pieces out of order and mostly reads just what each GET asks for:
// during a cold read through zdbfs the disk got requests of 1.1-1.9 MiB where
// a plain sequential read of the same file gets 3.7-3.9 MiB. zdb tracks where
// the large GETs of each data file land and, once they run sequentially, a
// prefetcher reads the file ahead of them in order, on a descriptor of its
// own (readahead_prefetch.go): the kernel's read-ahead then sees one plain
// sequential reader, reads large windows into the page cache, and the GETs
// find their pages there. A stream that reaches the end of a data file goes
// on at the start of the next one. Random access reads nothing ahead.
//
// POSIX_FADV_WILLNEED and readahead(2) were measured first: the kernel then
// reads order-0 pages, so at most 1 MiB per request here (the disk takes 254
// segments), and zdb spent more CPU (0.3 -> 0.57 s/GiB) for smaller requests.

const (
	// raWindow is how far ahead of the end of a sequential stream of GETs
	// the data file is read.
	raWindow = 16 << 20
	// raStep is the least the window is extended by at once, so a
	// prefetcher that caught up is not woken for every GET.
	raStep = 4 << 20
	// raNear is how close to the end of the stream so far the GETs that
	// start a stream must land: scattered GETs almost never do twice in a
	// row.
	raNear = 1 << 20
	// raAhead and raBehind bound where the GETs of an established stream
	// may land around its end: zdbfs has several READs of up to 1 MiB in
	// flight, spread over two connections, so GETs arrive out of order
	// (one READ was seen 19 MiB behind the front).
	raAhead  = 16 << 20
	raBehind = 64 << 20
	// raMinRun is how many GETs in a row must continue the stream, the
	// first one included, before anything is read ahead.
	raMinRun = 3
	// raChunk is how much the prefetcher reads at once; read-ahead ranges
	// are whole aligned chunks, as a plain sequential reader's would be.
	raChunk = 1 << 20
)

// readAhead is the read-ahead state of one open data file.
type readAhead struct {
	f *os.File // the data file as the GETs read it

	mu    sync.Mutex
	end   int64 // the furthest end of a GET in the current stream
	run   int   // GETs in a row that continued the stream
	asked int64 // the prefetcher reads up to here
	pos   int64 // where the prefetcher reads next
	// followed: the stream reached the end of the file and the next file
	// was read ahead from its start
	followed bool
	busy     bool     // a prefetcher goroutine runs
	own      *os.File // the prefetcher's descriptor, opened on first use
	stopped  bool     // the file was closed or a prefetch read failed
}

// established reports whether the GETs run sequentially. r.mu held.
func (r *readAhead) established() bool { return r.run >= raMinRun }

// plan records a GET of [off, off+n) in a file of size bytes and returns
// the range newly asked for, empty (from == to) when there is none: the
// stream is not sequential (yet), the window ahead of it is still full to
// within a step, or the file ends. The prefetcher reads on from r.pos up
// to r.asked. r.mu held.
func (r *readAhead) plan(off, n, size int64) (from, to int64) {
	lo, hi := r.end-raNear, r.end+raNear
	if r.established() {
		lo, hi = r.end-raBehind, r.end+raAhead
	}
	if r.run > 0 && off >= lo && off <= hi {
		r.run++
		r.end = max(r.end, off+n)
	} else {
		// a new stream starts here: what was asked for belongs to another
		r.run, r.end, r.asked, r.followed = 1, off+n, 0, false
	}
	if !r.established() {
		return 0, 0
	}
	from = max(r.asked, off&^(raChunk-1))
	to = min((r.end+raWindow+raChunk-1)&^(raChunk-1), size)
	if to <= from || to-from < raStep && to < size {
		return 0, 0 // the window is still full to within a step
	}
	if r.asked == 0 || r.pos < from-raBehind || r.pos > to {
		r.pos = from // a new stream, or the prefetcher was elsewhere
	}
	r.asked = to
	return from, to
}

// follow makes the start of a file of size bytes continue a stream that
// reached the end of the previous file: its first window is asked for
// before its first GET. A file with a stream of its own keeps it. r.mu
// held.
func (r *readAhead) follow(size int64) {
	if r.established() {
		return
	}
	r.run, r.end, r.followed = raMinRun, 0, false
	r.asked, r.pos = min(raWindow, size), 0
}

// readAheads maps each open data file to its read-ahead state. Entries are
// dropped when the file is closed (forgetReadAhead).
var readAheads sync.Map // *os.File -> *readAhead

// readAheadOf returns f's read-ahead state.
func readAheadOf(f *os.File) *readAhead {
	v, ok := readAheads.Load(f)
	if !ok {
		v, _ = readAheads.LoadOrStore(f, &readAhead{f: f})
	}
	return v.(*readAhead)
}

// wantsNext reports whether a GET ending at end in f, a file of size bytes,
// should look up the next data file: f's GETs run sequentially and near
// its end.
func wantsNext(f *os.File, end, size int64) bool {
	if end <= size-2*raWindow {
		return false
	}
	v, ok := readAheads.Load(f)
	if !ok {
		return false
	}
	r := v.(*readAhead)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.established() && !r.followed
}

// forgetReadAhead drops f's read-ahead state and stops its prefetcher;
// called when f is closed.
func forgetReadAhead(f *os.File) {
	v, ok := readAheads.LoadAndDelete(f)
	if !ok {
		return
	}
	r := v.(*readAhead)
	r.mu.Lock()
	r.stopped = true
	if !r.busy && r.own != nil {
		r.own.Close()
		r.own = nil
	}
	r.mu.Unlock()
}

// readAheadFor records the GET of p and has p's file read ahead of it when
// the GETs of that file run sequentially; a stream that reaches the end of
// its file goes on at the start of the next one (p.next).
func readAheadFor(p filePayload) {
	r := readAheadOf(p.f)
	r.mu.Lock()
	from, to := r.plan(p.off, int64(p.n), p.size)
	follow := r.established() && r.asked == p.size && p.next != nil && !r.followed
	if follow {
		r.followed = true
	}
	r.startLocked(to > from)
	r.mu.Unlock()
	if follow {
		n := readAheadOf(p.next)
		n.mu.Lock()
		n.follow(p.nextSize)
		n.startLocked(n.asked > n.pos)
		n.mu.Unlock()
	}
}

package zdb

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// memServer starts an in-process Server on a temp directory; connect
// hands it one end of a new unix socket pair.
func memServer(t *testing.T) (*Server, func() net.Conn) {
	t.Helper()
	srv := testServer(t)
	connect := func() net.Conn {
		cl, sv := socketPair(t)
		go srv.handle(sv)
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	return srv, connect
}

// pipeline writes reqs on c from another goroutine and reads one reply
// per request, failing on an error reply.
func pipeline(t *testing.T, c net.Conn, r *bufio.Reader, reqs []byte, n int) error {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(reqs)
		werr <- err
	}()
	for i := 0; i < n; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reply %d: %w", i, err)
		}
		switch line[0] {
		case '-':
			return fmt.Errorf("reply %d: %q", i, line)
		case '$':
			var size int
			fmt.Sscanf(line[1:], "%d", &size)
			if size >= 0 {
				if _, err := r.Discard(size + 2); err != nil {
					return err
				}
			}
		}
	}
	return <-werr
}

// heapInuse returns the live heap after a full collection.
func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestMemoryAfterPipelinedSets drives many connections with large
// pipelined SETs at once (batches, values larger than a chunk, a request
// that fails to parse) and checks what the server keeps afterwards: no
// chunk lent, at most maxFreeChunks kept, none after two idle trims, each
// connection back to its small buffers, and a live heap that grew by far
// less than one batch per connection.
func TestMemoryAfterPipelinedSets(t *testing.T) {
	const (
		conns  = 16
		rounds = 2
		depth  = 32 // SETs per pipelined write
		size   = 128 << 10
	)
	srv, connect := memServer(t)
	value := strings.Repeat("v", size)
	big := strings.Repeat("b", 3<<20) // larger than a chunk: a buffer of its own
	before := heapInuse()

	cs := make([]net.Conn, conns)
	rs := make([]*bufio.Reader, conns)
	for i := range cs {
		cs[i] = connect()
		rs[i] = bufio.NewReader(cs[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range cs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for round := 0; round < rounds; round++ {
				var b bytes.Buffer
				b.Write(req("SET", fmt.Sprintf("big-%d-%d", i, round), big))
				for j := 0; j < depth; j++ {
					b.Write(req("SET", fmt.Sprintf("k-%d-%d-%d", i, round, j), value))
				}
				n := depth + 1
				if err := pipeline(t, cs[i], rs[i], b.Bytes(), n); err != nil {
					errs <- fmt.Errorf("connection %d round %d: %w", i, round, err)
					return
				}
			}
			// a PING is read after the previous requests' chunks went back
			if err := pipeline(t, cs[i], rs[i], req("PING"), 1); err != nil {
				errs <- fmt.Errorf("connection %d ping: %w", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// a request held after large payloads that then fails to parse gives
	// its chunks back too
	bad := connect()
	var b bytes.Buffer
	for j := 0; j < 4; j++ {
		b.Write(req("SET", fmt.Sprintf("bad-%d", j), value))
	}
	b.WriteString("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$x\r\n")
	br := bufio.NewReader(bad)
	if err := pipeline(t, bad, br, b.Bytes(), 5); err == nil || !strings.Contains(err.Error(), "Malformed") {
		t.Fatalf("malformed request after pipelined SETs: %v, want a Malformed error reply", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection after a fatal protocol error: %v, want EOF", err)
	}

	if n := srv.args.lentBytes(); n != 0 {
		t.Fatalf("%d bytes of argument chunks still lent after every request was answered", n)
	}
	if n := srv.args.freeChunks(); n > maxFreeChunks {
		t.Fatalf("%d free chunks kept, more than %d", n, maxFreeChunks)
	}
	// every connection gives its buffers back after flushing its last
	// replies, then waits for the next request
	srv.clientsMu.Lock()
	sessions := make([]*session, 0, len(srv.clients))
	for c := range srv.clients {
		sessions = append(sessions, c)
	}
	srv.clientsMu.Unlock()
	if len(sessions) != conns {
		t.Fatalf("%d connections open, want %d", len(sessions), conns)
	}
	// (the checks hold clientsMu, which a session takes before it gives
	// anything back on close)
	srv.clientsMu.Lock()
	defer srv.clientsMu.Unlock()
	for i := 0; readBufsHeld.Load() != 0; i++ {
		if i == 2000 {
			t.Fatalf("%d read buffers still held 20 s after the last reply", readBufsHeld.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range sessions {
		for i := 0; !c.parked.Load(); i++ {
			if i == 2000 {
				t.Fatal("a connection did not go idle within 20 s of its last reply")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := c.rr.lentBytes(); n != 0 {
			t.Errorf("an idle connection holds %d bytes of chunks", n)
		}
		if len(c.rr.chunks) != 1 || cap(c.rr.chunks[0]) != ownChunkSize {
			t.Errorf("an idle connection holds %d chunks, the first of %d bytes", len(c.rr.chunks), cap(c.rr.chunks[0]))
		}
		if c.r.buf != nil || c.w != nil || cap(c.scratch) > maxIdleScratch {
			t.Errorf("an idle connection keeps a read buffer: %v, a reply buffer: %v, %d bytes of scratch",
				c.r.buf != nil, c.w != nil, cap(c.scratch))
		}
	}
	// the connections wake up when their clients close, and take a read
	// buffer (counting it first): order these reads before that
	readBufsHeld.Add(0)

	// two trims without traffic in between drop every unused chunk
	srv.args.trim()
	srv.args.trim()
	if n := srv.args.freeChunks(); n != 0 {
		t.Fatalf("%d free chunks kept after two idle trims", n)
	}
	// what is left per connection is its small buffers, its session and
	// goroutine, plus the index entries and pooled buffers the collector
	// has not dropped yet (sync.Pool); one batch per connection would be
	// 4 MiB each
	after := heapInuse()
	grown := int64(after) - int64(before)
	limit := int64(conns+1)*(2*readBufSize+ownChunkSize) + 4<<20
	t.Logf("heap in use: %d KiB before, %d KiB after %d connections × %d × %d KiB SETs", before>>10, after>>10, conns, rounds*depth, size>>10)
	if grown > limit {
		t.Fatalf("live heap grew by %d KiB, more than %d KiB", grown>>10, limit>>10)
	}
	runtime.KeepAlive(cs)
}

// TestChunkPool checks the pool's accounting: chunks and large buffers
// lent, the free list bound, and trim dropping only chunks left unused.
func TestChunkPool(t *testing.T) {
	var p chunkPool
	var held [][]byte
	for i := 0; i < maxFreeChunks+8; i++ {
		held = append(held, p.get(100))
	}
	large := p.get(argChunkSize + 1)
	if got, want := p.lentBytes(), int64((maxFreeChunks+8)*argChunkSize+argChunkSize+1); got != want {
		t.Fatalf("lent %d, want %d", got, want)
	}
	for _, b := range held {
		if cap(b) != argChunkSize || len(b) != 0 {
			t.Fatalf("chunk of len %d cap %d", len(b), cap(b))
		}
		p.put(b)
	}
	p.put(large)
	if p.lentBytes() != 0 || p.freeChunks() != maxFreeChunks {
		t.Fatalf("after put: lent %d, %d free, want 0 and %d", p.lentBytes(), p.freeChunks(), maxFreeChunks)
	}
	p.trim() // the low mark dates from before the puts: nothing unused all along
	if n := p.freeChunks(); n != maxFreeChunks {
		t.Fatalf("first trim left %d free chunks, want %d", n, maxFreeChunks)
	}
	// 5 chunks in use since the trim: the others stayed unused and go
	a := make([][]byte, 5)
	for i := range a {
		a[i] = p.get(1)
	}
	for _, b := range a {
		p.put(b)
	}
	if n := p.trim(); n != maxFreeChunks-5 {
		t.Fatalf("trim dropped %d chunks, want %d", n, maxFreeChunks-5)
	}
	if n := p.trim(); n != 5 {
		t.Fatalf("idle trim dropped %d chunks, want 5", n)
	}
	if p.freeChunks() != 0 {
		t.Fatalf("%d free chunks after idle trims", p.freeChunks())
	}
}

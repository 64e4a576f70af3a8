package zdb

// The server-wide pool of argument chunks: what bounds the memory that
// connections keep for request payloads.

import (
	"sync"
	"sync/atomic"
)

const (
	// argChunkSize is the size of a pooled argument chunk: two 128 KiB
	// values (zdbfs's block size) with their keys and command names
	argChunkSize = 264 << 10
	// maxFreeChunks bounds the chunks the pool keeps while unused (16.5 MiB)
	maxFreeChunks = 64
	// maxLentBatch stops every connection from reading more pipelined
	// requests into a batch while the chunks lent out reach it; a
	// connection still reads the request in front of it
	maxLentBatch = 32 << 20
)

// chunkPool lends argument chunks to connections and takes them back once
// their requests are answered. An argument larger than a chunk gets a
// buffer of its own, counted as lent but never kept. Unused chunks are
// kept up to maxFreeChunks; trim drops those unused since the previous
// trim. The zero value is ready.
type chunkPool struct {
	mu   sync.Mutex
	free [][]byte // most recently returned last
	// low is the fewest free chunks since the last trim: that many stayed
	// unused all along
	low  int
	lent atomic.Int64 // capacity of the chunks and buffers lent out
}

// get returns an empty buffer with room for n bytes: a pooled chunk when n
// fits in one.
func (p *chunkPool) get(n int) []byte {
	if n > argChunkSize {
		p.lent.Add(int64(n))
		return make([]byte, 0, n)
	}
	p.lent.Add(argChunkSize)
	p.mu.Lock()
	k := len(p.free)
	if k == 0 {
		p.low = 0
		p.mu.Unlock()
		return make([]byte, 0, argChunkSize)
	}
	b := p.free[k-1]
	p.free[k-1] = nil
	p.free = p.free[:k-1]
	p.low = min(p.low, k-1)
	p.mu.Unlock()
	return b[:0]
}

// put takes back a buffer from get.
func (p *chunkPool) put(b []byte) {
	p.lent.Add(-int64(cap(b)))
	if cap(b) != argChunkSize {
		return
	}
	p.mu.Lock()
	if len(p.free) < maxFreeChunks {
		p.free = append(p.free, b)
	}
	p.mu.Unlock()
}

// trim drops the free chunks that no get needed since the previous trim
// and returns how many it dropped.
func (p *chunkPool) trim() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(p.low, len(p.free))
	k := copy(p.free, p.free[n:])
	clear(p.free[k:])
	p.free = p.free[:k]
	p.low = k
	return n
}

// lentBytes returns the capacity of the chunks and buffers lent out.
func (p *chunkPool) lentBytes() int64 { return p.lent.Load() }

// freeChunks returns the number of unused chunks kept.
func (p *chunkPool) freeChunks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

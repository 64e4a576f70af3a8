package zdbfs

import (
	"bytes"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdb/client"
)

// The direct read path (read_direct.go) is tested in process over a real
// `qsfs zdb`, like the direct write path.

// readAtFS reads size bytes at off of ino with one READ.
func (f *testFS) readAtFS(ino uint64, off int64, size int) ([]byte, error) {
	buf := make([]byte, size)
	r, s := f.Read(nil, &fuse.ReadIn{InHeader: hdr(ino), Offset: uint64(off), Size: uint32(size)}, buf)
	if !s.Ok() {
		return nil, fmt.Errorf("read %d bytes at %d: %w", size, off, syscall.Errno(s))
	}
	b, s := r.Bytes(buf)
	if !s.Ok() {
		return nil, fmt.Errorf("read %d bytes at %d: %w", size, off, syscall.Errno(s))
	}
	return append([]byte(nil), b...), nil
}

// TestDirectReadPaths checks which READs land straight in the reply buffer
// (whole blocks, none cached: they stay out of the block cache) and which go
// through the cache, and that both return the file's bytes: a tail block
// shorter than a block, a block stored shorter than the file says (zeros
// after it), holes, unaligned and small reads.
func TestDirectReadPaths(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	ino := f.create("paths")
	m := model(nil)
	write := func(off int64, data []byte) {
		t.Helper()
		must(t, f.write(ino, off, data))
		m = m.write(off, data)
	}
	write(0, fill(8*blockSize, 1))                // blocks 0-7
	write(10*blockSize, fill(blockSize, 2))       // block 10, 8-9 holes
	write(12*blockSize, fill(100, 3))             // block 12 stored with 100 bytes
	write(14*blockSize, fill(blockSize+12345, 4)) // block 14 and a short tail block 15
	must(t, f.truncate(ino, int64(len(m))))       // no-op, keeps the model honest
	f.sync()
	must(t, f.shutdown())

	// block 12 holds 100 bytes but the file goes on past it: grow the file
	// by a truncate before reopening so that block 13 is a hole
	f = openTestFS(t, sock, "")
	ino = f.lookup("paths")
	// the tail block as stored holds more bytes than the file: only the
	// file's bytes come back (an in-place SET keeps the block's id)
	n, _ := f.node(ino)
	n.mu.Lock()
	tailID := uint64(n.blockID(15))
	n.mu.Unlock()
	long := append(append([]byte(nil), m[15*blockSize:]...), fill(20000, 5)...)
	_, err := f.b.data.do("SET", client.SeqKey(tailID), long)
	must(t, err)
	cases := []struct {
		off    int64
		size   int
		direct []uint32 // blocks read in place, not cached afterwards
		cached []uint32 // blocks read through the cache
	}{
		{0, 4 * blockSize, []uint32{0, 1, 2, 3}, nil},
		{14 * blockSize, 2 * blockSize, []uint32{14, 15}, nil}, // up to EOF, tail shorter than a block
		// reads through the cache from here on also read ahead
		{4*blockSize + 4096, 4096, nil, []uint32{4}},            // small: the block is cached
		{4 * blockSize, 2 * blockSize, nil, []uint32{4, 5}},     // block 4 cached now: whole READ through the cache
		{6 * blockSize, 1 << 20, nil, []uint32{6, 7, 10}},       // holes 8, 9: through the cache
		{11 * blockSize, 2 * blockSize, nil, []uint32{12}},      // hole 11
		{14*blockSize + 1, blockSize, nil, []uint32{14}},        // unaligned
		{int64(len(m)) - 10, 1 << 20, nil, []uint32{15}},        // past EOF: short read
		{int64(len(m)) + blockSize, 1 << 20, nil, nil},          // beyond EOF: nothing
		{12 * blockSize, blockSize, nil, []uint32{12}},          // cached already
		{0, 16 * blockSize, []uint32{}, []uint32{0, 1, 12, 14}}, // mixed
	}
	for _, c := range cases {
		got, err := f.readAtFS(ino, c.off, c.size)
		must(t, err)
		var want []byte
		if c.off < int64(len(m)) {
			want = m[c.off:min(c.off+int64(c.size), int64(len(m)))]
		}
		sameBytes(t, fmt.Sprintf("read %d at %d", c.size, c.off), got, want)
		for _, idx := range c.direct {
			if in, _ := f.cached(ino, idx); in {
				t.Errorf("read %d at %d: block %d cached, want it read in place", c.size, c.off, idx)
			}
		}
		for _, idx := range c.cached {
			if in, _ := f.cached(ino, idx); !in {
				t.Errorf("read %d at %d: block %d not cached, want it read through the cache", c.size, c.off, idx)
			}
		}
	}
	// the stored short block: the rest of the block reads as zeros
	must(t, f.truncate(ino, 13*blockSize))
	m = m.truncate(13 * blockSize)
	f.sync()
	must(t, f.shutdown())
	f = openTestFS(t, sock, "")
	ino = f.lookup("paths")
	got, err := f.readAtFS(ino, 12*blockSize, blockSize)
	must(t, err)
	sameBytes(t, "block stored shorter than the file", got, m[12*blockSize:])
	if in, _ := f.cached(ino, 12); in {
		t.Errorf("short stored block cached, want it read in place")
	}
	all, err := f.contents(ino)
	must(t, err)
	sameBytes(t, "whole file", all, m)
	must(t, f.shutdown())
}

// TestDirectReadRaces reads a file in whole-block READs while other
// goroutines rewrite whole blocks (direct writes, which keep a block's id),
// rewrite blocks through the cache and truncate it. Every half block holds
// its block's index and a version byte, alternating, so a READ that put a
// block at the wrong place or returned bytes that no write made shows up.
// At the end the file reads back as the last writes made it, also after a
// restart.
func TestDirectReadRaces(t *testing.T) {
	_, sock := zdbOnly(t)
	const blocks = 16
	// pattern is n bytes of blocks idx.. with version v
	pattern := func(idx int64, v byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			if i%2 == 0 {
				b[i] = byte(idx + int64(i/blockSize))
			} else {
				b[i] = v
			}
		}
		return b
	}
	// valid reports whether half block h (of block idx) is one write's or zeros
	valid := func(h []byte, idx int64) bool {
		if len(h) < 2 {
			return true
		}
		if h[0] == 0 && h[1] == 0 {
			return bytes.Count(h, []byte{0}) == len(h)
		}
		for i := 0; i+1 < len(h); i += 2 {
			if h[i] != byte(idx) || h[i+1] != h[1] {
				return false
			}
		}
		return true
	}
	for _, opts := range []string{"", ",cachesize=8"} {
		t.Run("opts="+opts, func(t *testing.T) {
			f := openTestFS(t, sock, opts)
			name := fmt.Sprintf("rrace%d", len(opts))
			ino := f.create(name)
			must(t, f.write(ino, 0, pattern(0, 1, blocks*blockSize)))
			f.sync()
			var mu sync.Mutex // orders writes and truncates against the model
			m := model(pattern(0, 1, blocks*blockSize))
			// ver is each half block's version (0: zeros), trunc counts the
			// truncates that zeroed it; both under mu
			var ver [2 * blocks]byte
			var trunc [2 * blocks]int
			for j := range ver {
				ver[j] = 1
			}
			next := byte(2)
			var wgW, wgR sync.WaitGroup
			errs := make(chan error, 8)
			stop := make(chan struct{})
			for w := 0; w < 2; w++ {
				wgW.Add(1)
				go func(w int) {
					defer wgW.Done()
					for i := 0; i < 120; i++ {
						idx := int64((i*7 + w*3) % (blocks - 1))
						mu.Lock()
						v := next
						next++
						var err error
						switch {
						case i%10 == 9:
							// shrink to a block boundary and grow back: the
							// tail reads as zero blocks
							size := (idx + 1) * blockSize
							if err = f.truncate(ino, size); err == nil {
								m = m.truncate(size)
								err = f.truncate(ino, blocks*blockSize)
								m = m.truncate(blocks * blockSize)
							}
							for j := 2 * (idx + 1); j < 2*blocks; j++ {
								ver[j] = 0
								trunc[j]++
							}
						case i%5 == 4:
							// half a block: it stays dirty in the cache, newer
							// than zdb, until the next sync
							p := pattern(idx, v, blockSize/2)
							err = f.write(ino, idx*blockSize, p)
							m = m.write(idx*blockSize, p)
							ver[2*idx] = v
						default:
							p := pattern(idx, v, 2*blockSize)
							err = f.write(ino, idx*blockSize, p)
							m = m.write(idx*blockSize, p)
							for j := 2 * idx; j < 2*idx+4; j++ {
								ver[j] = v
							}
						}
						if i%20 == 0 && err == nil {
							f.sync()
						}
						mu.Unlock()
						if err != nil {
							errs <- err
							return
						}
					}
				}(w)
			}
			for r := 0; r < 3; r++ {
				wgR.Add(1)
				go func(r int) {
					defer wgR.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						first := int64((i*4 + r*4) % blocks) // streams: mostly read in place
						mu.Lock()
						sv, st := ver, trunc
						mu.Unlock()
						got, err := f.readAtFS(ino, first*blockSize, 4*blockSize)
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						tnow := trunc
						mu.Unlock()
						for k := 0; k < len(got); k += blockSize / 2 {
							idx := first + int64(k/blockSize)
							j := 2*first + int64(k/(blockSize/2))
							h := got[k:min(k+blockSize/2, len(got))]
							if !valid(h, idx) {
								errs <- fmt.Errorf("read at block %d: half block %d of block %d holds bytes no write made", first, k/(blockSize/2)%2, idx)
								return
							}
							if rv := h[1]; rv < sv[j] && (rv != 0 || tnow[j] == st[j]) {
								errs <- fmt.Errorf("read at block %d: half block %d has version %d, older than %d written before the READ", first, j, rv, sv[j])
								return
							}
						}
					}
				}(r)
			}
			wgW.Wait()
			close(stop)
			wgR.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got, err := f.contents(ino)
			must(t, err)
			sameBytes(t, "after the races", got, m)
			f.sync()
			must(t, f.shutdown())
			f = openTestFS(t, sock, opts)
			ino = f.lookup(name)
			got, err = f.contents(ino)
			must(t, err)
			sameBytes(t, "after a restart", got, m)
			must(t, f.shutdown())
		})
	}
}

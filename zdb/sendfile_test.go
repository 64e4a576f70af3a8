package zdb

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestZeroCopyGet checks the sendfile(2) GET path against the values
// written: large and small values mixed, pipelined, over TCP and the unix
// socket, in user and sequential mode, across data file rotations, and with
// a data file cut short (the copying path's "Internal Error", the
// connection stays usable).
func TestZeroCopyGet(t *testing.T) {
	p := startZDB(t, "", "--datasize", "1M")
	sizes := []int{largeReply - 1, largeReply, largeReply + 1, 10, 128 << 10, 300 << 10, 0, 64 << 10}
	for _, network := range []string{"unix", "tcp"} {
		for _, mode := range []string{"user", "seq"} {
			c := p.dial(network)
			ns := "zc" + network + mode
			expect(t, c, "+OK", "NSNEW", ns)
			expect(t, c, "+OK", "NSSET", ns, "mode", mode)
			expect(t, c, "+OK", "SELECT", ns)
			var keys [][]byte
			var vals [][]byte
			for i := 0; i < 3*len(sizes); i++ { // about 2.5 MiB: two rotations at 1M
				v := bytes.Repeat([]byte{byte('a' + i%26)}, sizes[i%len(sizes)])
				if len(v) > 0 {
					v[len(v)-1] = byte(i)
				}
				key := []byte("k" + strings.Repeat("x", i%3) + string(rune('A'+i)))
				if mode == "seq" {
					key = nil
				}
				r := do(t, c, "SET", key, v)
				if err := r.Err(); err != nil {
					t.Fatalf("%s %s: SET %d: %v", network, mode, i, err)
				}
				keys = append(keys, r.Str)
				vals = append(vals, v)
			}
			// pipelined, so zero-copy replies interleave with buffered ones
			for _, k := range keys {
				if err := c.Send("GET", k); err != nil {
					t.Fatal(err)
				}
				if err := c.Send("EXISTS", k); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			for i := range keys {
				r, err := c.Receive()
				if err != nil || r.Err() != nil || !bytes.Equal(r.Str, vals[i]) {
					t.Fatalf("%s %s: GET %d (%d bytes): %v %v, got %d bytes", network, mode, i, len(vals[i]), err, r.Err(), len(r.Str))
				}
				if r, err := c.Receive(); err != nil || r.Int != 1 {
					t.Fatalf("%s %s: EXISTS %d after GET: %+v %v", network, mode, i, r, err)
				}
			}
		}
	}

	// a large value whose data file lost its tail: the copying path answers
	// as before and the connection goes on
	c := p.dial("unix")
	expect(t, c, "+OK", "NSNEW", "zccut")
	expect(t, c, "+OK", "SELECT", "zccut")
	big := bytes.Repeat([]byte("z"), 100<<10)
	expect(t, c, "$a", "SET", "a", big)
	expect(t, c, "$b", "SET", "b", "small")
	data := filepath.Join(p.dir, "zdb-data", "zccut", "d0")
	st, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, st.Size()-(60<<10)); err != nil {
		t.Fatal(err)
	}
	expect(t, c, "-Internal Error", "GET", "a")
	expect(t, c, "+PONG", "PING")
}

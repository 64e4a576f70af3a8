package zdb

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

// scanAll walks SCAN or RSCAN to the end and returns the keys in order.
func scanAll(t *testing.T, c *client.Conn, cmd string) []string {
	t.Helper()
	var keys []string
	r := do(t, c, cmd)
	for r.Kind != client.KindError {
		if len(r.Array) != 2 || len(r.Array[0].Str) != cursorSize {
			t.Fatalf("%s reply %s", cmd, fmtReply(r))
		}
		for _, it := range r.Array[1].Array {
			if len(it.Array) != 3 || it.Array[1].Kind != client.KindInt || it.Array[2].Kind != client.KindInt {
				t.Fatalf("%s item %s", cmd, fmtReply(it))
			}
			keys = append(keys, string(it.Array[0].Str))
		}
		r = do(t, c, cmd, r.Array[0].Str)
	}
	if string(r.Str) != "No more data" {
		t.Fatalf("%s ended with %s", cmd, fmtReply(r))
	}
	return keys
}

func TestScanKeyCurHistory(t *testing.T) {
	p := startZDB(t, "", "--datasize", "512k")
	c := p.dial("tcp")
	expect(t, c, "-No more data", "SCAN")
	expect(t, c, "-No more data", "RSCAN")
	for i := 0; i < 30; i++ {
		expect(t, c, fmt.Sprintf("$k%02d", i), "SET", fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d-%0100000d", i, 0))
	}
	expect(t, c, "$k05", "SET", "k05", "new")
	expect(t, c, "+OK", "DEL", "k06")
	var want []string
	for i := 0; i < 30; i++ {
		if i != 5 && i != 6 {
			want = append(want, fmt.Sprintf("k%02d", i))
		}
	}
	want = append(want, "k05")
	if got := scanAll(t, c, "SCAN"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("SCAN order\n got %v\nwant %v", got, want)
	}
	if got := scanAll(t, c, "SCANX"); len(got) != len(want) {
		t.Fatalf("SCANX = %v", got)
	}
	rev := scanAll(t, c, "RSCAN")
	for i := range want {
		if rev[len(rev)-1-i] != want[i] {
			t.Fatalf("RSCAN = %v", rev)
		}
	}
	expect(t, c, "-Invalid key format", "SCAN", "short")
	expect(t, c, "-Invalid key format", "SCAN", "xxxxxxxxxxxxxxxxx")
	cur := do(t, c, "KEYCUR", "k28")
	if len(cur.Str) != cursorSize {
		t.Fatalf("KEYCUR = %s", fmtReply(cur))
	}
	r := do(t, c, "SCAN", cur.Str)
	if got := fmtReply(r.Array[1]); len(r.Array[1].Array) != 2 || r.Array[1].Array[0].Array[0].Str == nil || string(r.Array[1].Array[0].Array[0].Str) != "k29" {
		t.Fatalf("SCAN after KEYCUR k28: %s", got)
	}
	expect(t, c, "-Key not found", "KEYCUR", "k06")
	// HISTORY walks back through versions
	expect(t, c, "$k05", "SET", "k05", "newer")
	h := do(t, c, "HISTORY", "k05")
	if len(h.Array) != 3 || string(h.Array[2].Str) != "newer" || len(h.Array[0].Str) != 8 {
		t.Fatalf("HISTORY = %s", fmtReply(h))
	}
	if _, err := strconv.Atoi(string(h.Array[1].Str)); err != nil {
		t.Fatalf("HISTORY timestamp %q", h.Array[1].Str)
	}
	h = do(t, c, "HISTORY", "k05", h.Array[0].Str)
	if string(h.Array[2].Str) != "new" {
		t.Fatalf("HISTORY step 1 = %s", fmtReply(h))
	}
	older := h.Array[0].Str
	h = do(t, c, "HISTORY", "k05", older)
	if !h.Array[0].Nil || string(h.Array[2].Str[:4]) != "v5-0" {
		t.Fatalf("HISTORY oldest = %.80s", fmtReply(h))
	}
	expect(t, c, "-Invalid arguments (invalid key)", "HISTORY", "k04", older)
	expect(t, c, "-No more history", "HISTORY", "k05", make([]byte, 8))
	expect(t, c, "-Invalid arguments", "HISTORY", "k05", "short")
	expect(t, c, "-Invalid arguments", "HISTORY")
	expect(t, c, "-Key not found", "HISTORY", "k06")
	// DATA RAW on the first data entry
	d := do(t, c, "DATA", "RAW", "0", "28")
	if len(d.Array) != 6 || string(d.Array[0].Str) != "k00" || d.Array[1].Int != 0 || len(d.Array[2].Str) != 10 || d.Array[3].Int != 0 {
		t.Fatalf("DATA RAW = %.120s", fmtReply(d))
	}
	expect(t, c, "-EOF", "DATA", "RAW", "0", "99999999")
	// an offset inside k00's value: its '0' bytes make an entry header
	// that claims more than the file holds (an offset inside the header
	// would read the entry's timestamp, which differs from run to run)
	inValue := 28 + dataEntrySize + len("k00") + len("v0-") + 100
	expect(t, c, "-Unexpected Internal Error", "DATA", "RAW", "0", strconv.Itoa(inValue))
	expect(t, c, "-Missing arguments", "DATA")
	expect(t, c, "-Missing arguments", "INDEX")
}

func TestScanSequential(t *testing.T) {
	p := startZDB(t, "", "--mode", "seq")
	c := p.dial("unix")
	for i := 0; i < 5; i++ {
		expect(t, c, seq(uint64(i)), "SET", "", fmt.Sprintf("v%d", i))
	}
	expect(t, c, seq(1), "SET", client.SeqKey(1), "v1b")
	expect(t, c, "+OK", "DEL", client.SeqKey(3))
	got := scanAll(t, c, "SCAN")
	want := []string{string(client.SeqKey(0)), string(client.SeqKey(1)), string(client.SeqKey(2)), string(client.SeqKey(4))}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("SCAN = %q, want %q", got, want)
	}
	h := do(t, c, "HISTORY", client.SeqKey(1))
	if string(h.Array[2].Str) != "v1b" {
		t.Fatalf("HISTORY = %s", fmtReply(h))
	}
	h = do(t, c, "HISTORY", client.SeqKey(1), h.Array[0].Str)
	if string(h.Array[2].Str) != "v1" || !h.Array[0].Nil {
		t.Fatalf("HISTORY back = %s", fmtReply(h))
	}
}

func TestWait(t *testing.T) {
	p := startZDB(t, "")
	w := p.dial("tcp")
	o := p.dial("unix")
	expect(t, w, "-Invalid arguments", "WAIT")
	expect(t, w, "-Invalid timeout", "WAIT", "SET", "50")
	expect(t, w, "-Timeout", "WAIT", "SET", "100")
	done := make(chan string, 1)
	go func() {
		r, err := w.Do("WAIT", "SET", "20000")
		if err != nil {
			done <- err.Error()
			return
		}
		done <- fmtReply(r)
	}()
	// keep writing until the waiter has registered and is woken
	for i := 0; ; i++ {
		expect(t, o, "$w", "SET", "w", strconv.Itoa(i))
		select {
		case got := <-done:
			if got != "+SET" {
				t.Fatalf("WAIT = %s", got)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A large namespace takes several timesliced SCAN calls; every live key
// comes back exactly once, in insertion order, across index files.
func TestScanLargeNamespace(t *testing.T) {
	p := startZDB(t, "", "--datasize", "512k")
	c := p.dial("unix")
	const n = 12000
	for i := 0; i < n; i++ {
		c.Send("SET", fmt.Sprintf("key-%05d", i), fmt.Sprintf("value-%d-%040d", i, 0))
	}
	c.Flush()
	for i := 0; i < n; i++ {
		if r, err := c.Receive(); err != nil || r.Err() != nil {
			t.Fatalf("SET %d: %v %v", i, err, r.Err())
		}
	}
	keys := scanAll(t, c, "SCAN")
	if len(keys) != n {
		t.Fatalf("SCAN returned %d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if k != fmt.Sprintf("key-%05d", i) {
			t.Fatalf("key %d = %s", i, k)
		}
	}
	if rev := scanAll(t, c, "RSCAN"); len(rev) != n || rev[0] != keys[n-1] || rev[n-1] != keys[0] {
		t.Fatalf("RSCAN returned %d keys", len(rev))
	}
	if m := client.ParseInfo(do(t, c, "NSINFO", "default").Str); m["data_current_id"] == "0" {
		t.Fatalf("expected several files: %v", m)
	}
}

func TestDefaultMaxsize(t *testing.T) {
	p := startZDB(t, "", "--maxsize", "10")
	c := p.dial("tcp")
	expect(t, c, "$a", "SET", "a", "12345")
	expect(t, c, "-No space left on this namespace", "SET", "b", "123456")
	expect(t, c, "$b", "SET", "b", "12345")
	m := client.ParseInfo(do(t, c, "NSINFO", "default").Str)
	if m["data_limits_bytes"] != "10" || m["space_available"] != "0" {
		t.Fatalf("NSINFO: %v", m)
	}
}

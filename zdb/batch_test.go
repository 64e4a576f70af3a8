package zdb

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

// streamRun is what one run of a request stream produced.
type streamRun struct {
	replies []string
	files   map[string]string // path under the run directory: normalized content digest
	jumps   []string          // jump-index hook runs, instance id removed
	batches int               // "batched N SETs" debug lines
	failed  int               // "batch write failed" debug lines
}

// runStream starts zdb with flags (plus a logging hook and --verbose) in a
// fresh directory, runs prep, sends the raw requests (each answered with
// exactly one reply) either all in one write or one at a time waiting for
// each reply, stops zdb with SIGTERM and returns the replies and files.
func runStream(t *testing.T, reqs [][]byte, pipelined bool, flags []string, prep func(*zdbProc)) streamRun {
	t.Helper()
	dir := t.TempDir()
	hook, hookLog := writeHook(t, dir)
	p := startZDB(t, dir, append(flags, "--hook", hook, "--verbose")...)
	if prep != nil {
		prep(p)
	}
	nc, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewConn(nc, 60*time.Second)
	defer c.Close()
	var run streamRun
	receive := func() {
		r, err := c.Receive()
		if err != nil {
			t.Fatalf("reply %d: %v", len(run.replies), err)
		}
		run.replies = append(run.replies, shortReply(r))
	}
	if pipelined {
		all := bytes.Join(reqs, nil)
		go nc.Write(all)
		for range reqs {
			receive()
		}
	} else {
		for _, r := range reqs {
			if _, err := nc.Write(r); err != nil {
				t.Fatal(err)
			}
			receive()
		}
	}
	if code := p.stop(syscall.SIGTERM); code != 143 {
		t.Fatalf("exit status %d", code)
	}
	run.files = normalizedFiles(t, dir)
	log, _ := os.ReadFile(hookLog)
	for _, line := range strings.Split(string(log), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "jump-index" {
			run.jumps = append(run.jumps, strings.Join(append(f[:1:1], f[2:]...), " "))
		}
	}
	sort.Strings(run.jumps)
	run.batches = strings.Count(p.Output(), "batched ")
	run.failed = strings.Count(p.Output(), "batch write failed")
	return run
}

// shortReply formats a reply, large bulks as length and digest.
func shortReply(r client.Reply) string {
	if r.Kind == client.KindBulk && !r.Nil && len(r.Str) > 64 {
		return fmt.Sprintf("$<%d bytes %x>", len(r.Str), sha256.Sum256(r.Str))
	}
	return fmtReply(r)
}

// normalizedFiles digests every index and data file with the timestamps
// of records and entries zeroed (they depend on the second a request
// ran in), and every namespace descriptor as is.
func normalizedFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range []string{"zdb-index", "zdb-data"} {
		err := filepath.Walk(filepath.Join(dir, root), func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() || strings.HasPrefix(fi.Name(), ".") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(fi.Name(), "i"):
				for off := indexHeaderSize; off+indexItemSize <= len(b); off += indexItemSize + int(b[off]) {
					clear(b[off+18 : off+22])
				}
			case strings.HasPrefix(fi.Name(), "d"):
				for off := dataHeaderSize; off+dataEntrySize <= len(b); {
					clear(b[off+14 : off+18])
					off += dataEntrySize + int(b[off]) + int(binary.LittleEndian.Uint32(b[off+1:]))
				}
			}
			rel, _ := filepath.Rel(dir, p)
			out[rel] = fmt.Sprintf("%d bytes %x", len(b), sha256.Sum256(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sameRuns checks that the pipelined run answered and stored exactly what
// the one-at-a-time run did.
func sameRuns(t *testing.T, one, piped streamRun) {
	t.Helper()
	if len(one.replies) != len(piped.replies) {
		t.Fatalf("%d replies one by one, %d pipelined", len(one.replies), len(piped.replies))
	}
	for i := range one.replies {
		if one.replies[i] != piped.replies[i] {
			t.Fatalf("reply %d: one by one %q, pipelined %q", i, one.replies[i], piped.replies[i])
		}
	}
	for p, d := range one.files {
		if piped.files[p] != d {
			t.Errorf("%s: one by one %s, pipelined %s", p, d, piped.files[p])
		}
	}
	for p := range piped.files {
		if _, ok := one.files[p]; !ok {
			t.Errorf("%s only in the pipelined run", p)
		}
	}
	if strings.Join(one.jumps, "\n") != strings.Join(piped.jumps, "\n") {
		t.Errorf("jump-index hooks: one by one %q, pipelined %q", one.jumps, piped.jumps)
	}
}

func value(i, size int) string {
	return strings.Repeat(string(rune('a'+i%26)), size)
}

// Pipelined SETs of mixed sizes, crossing the datasize rotation several
// times, with updates, failing requests, a protocol error and other
// commands in between, get the same replies and leave the same files as
// the same requests sent one at a time.
func TestBatchedSetsMatchOneByOne(t *testing.T) {
	var reqs [][]byte
	add := func(args ...string) { reqs = append(reqs, req(args...)) }
	add("NSNEW", "s")
	add("NSSET", "s", "mode", "seq")
	add("SELECT", "s")
	sizes := []int{0, 1, 100, 4096, 30000, 131072, 7, 65536, 131072, 131072}
	for i := 0; i < 60; i++ {
		add("SET", "", value(i, sizes[i%len(sizes)]))
	}
	add("SET", string(le64(3)), "updated")         // update, mid-stream
	add("SET", string(le64(99999)), "x")           // Invalid key, only update authorized
	add("SET", "abc", "x")                         // not an id
	add("S", "", value(1, 5000))                   // abbreviation
	add("SETX", "", value(2, 5000))                // alias
	add("SET", "", value(3, 200000), "1700000000") // with timestamp (admin)
	reqs = append(reqs, []byte("PING\r\n"))        // Malformed request, array expected
	for i := 0; i < 20; i++ {
		add("SET", "", value(i, sizes[(i*3)%len(sizes)]))
	}
	add("GET", string(le64(3)))
	add("GET", string(le64(5)))
	add("DBSIZE")
	add("NSNEW", "u")
	add("NSSET", "u", "maxsize", "700000")
	add("SELECT", "u")
	for i := 0; i < 40; i++ {
		k := "k" + strconv.Itoa(i%30) // the last ten overwrite
		if i == 12 {
			k = "k3" // repeated within a batch
		}
		add("SET", k, value(i, sizes[i%len(sizes)]))
	}
	add("SET", "k1", value(1, sizes[1]))      // unchanged: $-1
	add("SET", "", "x")                       // Invalid argument, key needed
	add("SET", strings.Repeat("K", 256), "x") // Key too large
	for i := 0; i < 10; i++ {
		add("SET", "late"+strconv.Itoa(i), value(i, 100000)) // maxsize: No space left
	}
	add("DBSIZE")
	add("SELECT", "default")
	for i := 0; i < 30; i++ {
		add("SET", "d"+strconv.Itoa(i), value(i, 9000))
	}
	add("GET", "d7")

	flags := []string{"--datasize", "512k"}
	one := runStream(t, reqs, false, flags, nil)
	piped := runStream(t, reqs, true, flags, nil)
	sameRuns(t, one, piped)
	if one.batches != 0 {
		t.Errorf("%d batches one request at a time", one.batches)
	}
	if piped.batches == 0 {
		t.Errorf("no batch in the pipelined run")
	}
	if len(one.jumps) < 3 {
		t.Errorf("only %d rotations: %q", len(one.jumps), one.jumps)
	}
	t.Logf("%d requests, %d batches, %d rotations", len(reqs), piped.batches, len(one.jumps))
}

// A write that fails in the middle of a batch (the data file reaches the
// process's file size limit: EFBIG) falls back to one request at a time:
// the same replies and files as without batching.
func TestBatchWriteFailureFallsBack(t *testing.T) {
	prlimit := needTool(t, "prlimit")
	var reqs [][]byte
	add := func(args ...string) { reqs = append(reqs, req(args...)) }
	add("NSNEW", "s")
	add("NSSET", "s", "mode", "seq")
	add("SELECT", "s")
	for i := 0; i < 40; i++ {
		add("SET", "", value(i, 20000+i*1000))
	}
	for i := 0; i < 20; i++ {
		add("SET", "", value(i, 100+i)) // small ones that still fit
	}
	add("DBSIZE")
	limit := func(p *zdbProc) {
		out, err := exec.Command(prlimit, "--pid", strconv.Itoa(p.Pid()), "--fsize=600000:600000").CombinedOutput()
		if err != nil {
			t.Skipf("prlimit: %v %s", err, out)
		}
	}
	flags := []string{"--datasize", "4M"}
	one := runStream(t, reqs, false, flags, limit)
	piped := runStream(t, reqs, true, flags, limit)
	sameRuns(t, one, piped)
	failed := 0
	for _, r := range one.replies {
		if r == "-Cannot write data right now" {
			failed++
		}
	}
	if failed == 0 {
		t.Fatalf("no write failed: %q", one.replies)
	}
	if piped.failed == 0 {
		t.Errorf("no batch write failed")
	}
	t.Logf("%d failed writes, %d batches, %d failed batches", failed, piped.batches, piped.failed)
}

// kill -9 while pipelined batches are being written: after a restart
// every acknowledged SET is there, the files are consistent, and new
// writes continue after the last stored id.
func TestKill9MidBatch(t *testing.T) {
	p := startZDB(t, "", "--datasize", "1M")
	setup := p.dial("unix")
	expect(t, setup, "+OK", "NSNEW", "s")
	expect(t, setup, "+OK", "NSSET", "s", "mode", "seq")
	// ids 0..63 exist before the workers start; worker 4 updates them
	const updated = 64
	if err := setup.Select("s", ""); err != nil {
		t.Fatal(err)
	}
	// sent[id]: every value given to id, in order; updAcked[id]: the index
	// in sent[id] of the last acknowledged one
	sent := make([][][]byte, updated)
	updAcked := make([]int, updated)
	for i := range sent {
		v := []byte(fmt.Sprintf("initial-%d", i))
		if _, err := setup.Set(nil, v); err != nil {
			t.Fatal(err)
		}
		sent[i] = [][]byte{v}
	}
	var mu sync.Mutex
	seqAcked := map[uint64][]byte{}
	userAcked := map[string][]byte{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 5; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := client.Dial("unix", p.sock, 5*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			if (w%2 == 1 || w == 4) && c.Select("s", "") != nil {
				return
			}
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				const depth = 16
				vals := make([][]byte, depth)
				keys := make([]string, depth)
				for j := range vals {
					vals[j] = bytes.Repeat([]byte(fmt.Sprintf("%d-%d-%d;", w, round, j)), 100+(round*depth+j)%3000)
					keys[j] = fmt.Sprintf("w%d-%d-%d", w, round, j)
					if w == 4 {
						id := (round*depth + j) % updated
						mu.Lock()
						sent[id] = append(sent[id], vals[j])
						mu.Unlock()
						c.Send("SET", client.SeqKey(uint64(id)), vals[j])
					} else if w%2 == 1 {
						c.Send("SET", "", vals[j])
					} else {
						c.Send("SET", keys[j], vals[j])
					}
				}
				if c.Flush() != nil {
					return
				}
				for j := range vals {
					r, err := c.Receive()
					if err != nil || r.Kind != client.KindBulk {
						return
					}
					mu.Lock()
					if w == 4 {
						id, _ := client.SeqID(r.Str)
						if id != uint64((round*depth+j)%updated) {
							mu.Unlock()
							return
						}
						for n, v := range sent[id] {
							if &v[0] == &vals[j][0] {
								updAcked[id] = n
							}
						}
					} else if w%2 == 1 {
						id, _ := client.SeqID(r.Str)
						seqAcked[id] = vals[j]
					} else {
						userAcked[keys[j]] = vals[j]
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	p.Kill()
	close(stop)
	wg.Wait()
	p.Restart()
	mu.Lock()
	defer mu.Unlock()
	if len(seqAcked) == 0 || len(userAcked) == 0 {
		t.Fatalf("nothing acknowledged")
	}
	c := p.dial("unix")
	for k, v := range userAcked {
		got, err := c.Get([]byte(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("acknowledged %s lost after kill -9 (err %v, %d bytes)", k, err, len(got))
		}
	}
	if err := c.Select("s", ""); err != nil {
		t.Fatal(err)
	}
	for id := range sent {
		got, err := c.Get(client.SeqKey(uint64(id)))
		if err != nil {
			t.Fatalf("get updated id %d: %v", id, err)
		}
		found := false
		for _, v := range sent[id][updAcked[id]:] {
			found = found || bytes.Equal(got, v)
		}
		if !found {
			t.Fatalf("id %d after kill -9: %d bytes, neither its last acknowledged value nor a later one", id, len(got))
		}
	}
	var maxID uint64
	for id, v := range seqAcked {
		got, err := c.Get(client.SeqKey(id))
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("acknowledged seq id %d lost after kill -9 (err %v)", id, err)
		}
		maxID = max(maxID, id)
	}
	// the next id follows every stored record (acknowledged or not)
	id, err := c.Set(nil, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	next, _ := client.SeqID(id)
	if next <= maxID {
		t.Fatalf("next id %d after restart, acknowledged up to %d", next, maxID)
	}
	if got, err := c.Get(id); err != nil || string(got) != "after" {
		t.Fatalf("get new id %d: %q %v", next, got, err)
	}
	p.stop(syscall.SIGTERM)
	for _, ns := range []string{"default", "s"} {
		live := checkFiles(t, filepath.Join(p.dir, "zdb-index", ns), filepath.Join(p.dir, "zdb-data", ns))
		t.Logf("%s: %d live records", ns, live)
	}
	updates := 0
	for id := range sent {
		updates += updAcked[id]
	}
	if updates == 0 {
		t.Fatalf("no update acknowledged")
	}
	t.Logf("verified %d user keys, %d sequential ids and %d acknowledged updates", len(userAcked), len(seqAcked), updates)
}

// Bytes read in place by readv are counted in INFO's network_rx like
// those read through the buffer.
func TestNetworkRxCountsPayloadsReadInPlace(t *testing.T) {
	p := startZDB(t, "")
	info := p.dial("unix")
	rx := func() int64 {
		r := do(t, info, "INFO")
		n, err := strconv.ParseInt(client.ParseInfo(r.Str)["network_rx_bytes"], 10, 64)
		if err != nil {
			t.Fatalf("network_rx_bytes in %q: %v", r.Str, err)
		}
		return n
	}
	before := rx()
	var stream []byte
	for i := 0; i < 20; i++ {
		stream = append(stream, req("SET", "k"+strconv.Itoa(i), value(i, 100000+i*7))...)
	}
	nc, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.NewConn(nc, 30*time.Second)
	go nc.Write(stream)
	for i := 0; i < 20; i++ {
		if r, err := c.Receive(); err != nil || fmtReply(r) != "$k"+strconv.Itoa(i) {
			t.Fatalf("reply %d: %s %v", i, fmtReply(r), err)
		}
	}
	if got, want := rx()-before, int64(len(stream)+len(req("INFO"))); got != want {
		t.Fatalf("network_rx grew by %d, want %d", got, want)
	}
}

// seqPrep creates sequential namespace s holding n values (id i holds
// value(i, sizes[i%len(sizes)])) before a stream runs.
func seqPrep(t *testing.T, n int, sizes []int, props ...string) func(*zdbProc) {
	return func(p *zdbProc) {
		c := p.dial("unix")
		expect(t, c, "+OK", "NSNEW", "s")
		expect(t, c, "+OK", "NSSET", "s", "mode", "seq")
		for i := 0; i+1 < len(props); i += 2 {
			expect(t, c, "+OK", "NSSET", "s", props[i], props[i+1])
		}
		if err := c.Select("s", ""); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if _, err := c.Set(nil, []byte(value(i, sizes[i%len(sizes)]))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Pipelined updates of existing sequential ids (what zdbfs sends when it
// rewrites blocks) are batched and get the same replies and files as the
// same requests one at a time: plain runs of updates, the same id twice
// in a run, an update after a delete, unchanged values, an id given with
// high bits set, unknown ids, updates mixed with new ids, crossing the
// datasize rotation and reaching maxsize.
func TestBatchedSeqUpdatesMatchOneByOne(t *testing.T) {
	sizes := []int{131072, 4096, 100, 65536, 0, 30000}
	flags := []string{"--datasize", "1M"}

	// only updates: they must be batched
	var reqs [][]byte
	add := func(args ...string) { reqs = append(reqs, req(args...)) }
	add("SELECT", "s")
	for i := 0; i < 30; i++ {
		add("SET", string(le64(uint64(i))), value(i+1, 131072))
	}
	one := runStream(t, reqs, false, flags, seqPrep(t, 30, sizes))
	piped := runStream(t, reqs, true, flags, seqPrep(t, 30, sizes))
	sameRuns(t, one, piped)
	if piped.batches == 0 {
		t.Errorf("no batch of updates in the pipelined run")
	}
	if len(one.jumps) == 0 {
		t.Errorf("the updates did not cross a rotation")
	}
	t.Logf("updates only: %d batches, %d rotations", piped.batches, len(one.jumps))

	// edge cases
	reqs = nil
	add("SELECT", "s")
	for i := 0; i < 10; i++ {
		add("SET", string(le64(uint64(i))), value(i+2, sizes[(i+1)%len(sizes)]))
	}
	add("SET", string(le64(11)), "a")
	add("SET", string(le64(12)), "b")
	add("SET", string(le64(11)), "c") // the same id twice in a run
	add("SET", string(le64(13)), "d")
	add("SET", string(le64(11)), "c") // unchanged value
	add("SET", string(le64(14)), value(14, sizes[14%len(sizes)]))
	add("SET", string(le64(15)), "e")
	add("DEL", string(le64(16)))
	add("SET", string(le64(16)), "f") // update after delete
	add("SET", string(le64(17)), "g")
	add("SET", string(le64(18|1<<40)), "h") // high bits ignored, as one by one
	add("SET", string(le64(99999)), "i")    // Invalid key, only update authorized
	add("SET", string(le64(19)), "j")
	for i := 0; i < 40; i++ { // new ids and updates mixed, also of fresh ids
		if i%3 == 0 {
			add("SET", "", value(i, sizes[i%len(sizes)]))
		} else {
			add("SET", string(le64(uint64(20+i%15))), value(i+5, sizes[(i*7)%len(sizes)]))
		}
		if i%10 == 9 {
			add("SET", string(le64(uint64(30+i))), "fresh")
		}
	}
	add("SET", "abc", "x")
	for i := 0; i < 60; i++ { // toward maxsize: No space left on some
		add("SET", string(le64(uint64(i%40))), value(i+9, 60000+i))
	}
	for i := 0; i < 5; i++ {
		add("SET", "", value(i, 200000))
	}
	add("DBSIZE")
	add("GET", string(le64(11)))
	add("GET", string(le64(18)))
	prep := seqPrep(t, 40, sizes, "maxsize", "3000000")
	one = runStream(t, reqs, false, flags, prep)
	piped = runStream(t, reqs, true, flags, prep)
	sameRuns(t, one, piped)
	if piped.batches == 0 {
		t.Errorf("no batch in the pipelined run")
	}
	var nospace, nils int
	for _, r := range one.replies {
		switch r {
		case "-No space left on this namespace":
			nospace++
		case "(nil)", "$-1":
			nils++
		}
	}
	if nospace == 0 || nils == 0 {
		t.Errorf("stream missed cases: %d no space, %d unchanged: %q", nospace, nils, one.replies)
	}
	t.Logf("edge cases: %d requests, %d batches, %d rotations", len(reqs), piped.batches, len(one.jumps))
}

// BenchmarkSetSeqUpdate128KUnix is zdbfs's rewrite path: 128 KiB values
// replacing existing sequential ids (each id once per batch of 16, the
// value changing every pass), over a unix socket.
func BenchmarkSetSeqUpdate128KUnix(b *testing.B) {
	c := inProcess(b, true, "--mode", "seq")
	const ids = 256
	vals := [2][]byte{bytes.Repeat([]byte("v"), 128<<10), bytes.Repeat([]byte("w"), 128<<10)}
	r := bufio.NewReader(c)
	for i := 0; i < ids; i++ {
		if _, err := c.Write(req("SET", "", string(vals[0]))); err != nil {
			b.Fatal(err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "$8\r\n" {
			b.Fatalf("set %d: %q %v", i, line, err)
		}
		r.Discard(10)
	}
	b.SetBytes(128 << 10)
	benchPipelined(b, c, func(dst []byte, i int) []byte {
		dst = append(dst, "*3\r\n$3\r\nSET\r\n$8\r\n"...)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(i%ids))
		dst = append(dst, "\r\n$131072\r\n"...)
		return append(append(dst, vals[(i/ids+1)%2]...), "\r\n"...)
	})
}

package zdb

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

// rawRoundTrip writes raw bytes on a fresh connection and returns what the
// server answers until it goes quiet or closes.
func rawRoundTrip(t *testing.T, network, addr string, in []byte, wantReplies int) string {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	go nc.Write(in)
	r := bufio.NewReader(nc)
	var out strings.Builder
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < wantReplies; i++ {
		line, err := r.ReadString('\n')
		out.WriteString(line)
		if err != nil {
			break
		}
	}
	return out.String()
}

func TestBadInputGetsOfficialErrors(t *testing.T) {
	p := startZDB(t, "")
	other := p.dial("unix")
	expect(t, other, "$keep", "SET", "keep", "me")
	tcp := fmt.Sprintf("127.0.0.1:%d", p.port)
	cases := []struct {
		name, in, want string
		replies        int
	}{
		{"inline", "PING\r\n*1\r\n$4\r\nPING\r\n", "-Malformed request, array expected\r\n+PONG\r\n", 2},
		{"unknown", "*1\r\n$7\r\nFOOBARX\r\n", "-Command not supported\r\n", 1},
		{"empty", "*0\r\n*1\r\n$4\r\nPING\r\n", "-Missing arguments\r\n+PONG\r\n", 2},
		// official's tricky read-buffer boundaries (tests/zdb_lowlevel.c)
		{"payload across 8 KiB", "*3\r\n$3\r\nSET\r\n$3\r\nXXX\r\n$8164\r\n" + strings.Repeat("K", 8164) + "\r\n*2\r\n$3\r\nDEL\r\n$3\r\nXXX\r\n", "$3\r\nXXX\r\n+OK\r\n", 3},
		{"header across 8 KiB", "*2\r\n$8178\r\n" + strings.Repeat("W", 8178) + "\r\n$4\r\nXXXX\r\n", "-Command not supported\r\n", 1},
		{"arity", "*2\r\n$3\r\nGET\r\n$0\r\n\r\n*4\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", "-Invalid argument\r\n-Unexpected arguments\r\n", 2},
		{"too many", "*1025\r\n" + strings.Repeat("$3\r\nGET\r\n", 1025) + "*1\r\n$4\r\nPING\r\n", "-Too many arguments\r\n+PONG\r\n", 2},
		{"payload", "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$8388609\r\n" + strings.Repeat("x", 8388609) + "\r\n*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", "-Payload too big\r\n$-1\r\n", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, nw := range [][2]string{{"tcp", tcp}, {"unix", p.sock}} {
				if got := rawRoundTrip(t, nw[0], nw[1], []byte(tc.in), tc.replies); got != tc.want {
					t.Fatalf("%s: got %q, want %q", nw[0], got, tc.want)
				}
			}
		})
	}
	// a fatal framing error closes only that connection
	if got := rawRoundTrip(t, "tcp", tcp, []byte("*1\r\n+PING\r\n"), 2); got != "-Malformed query string\r\n" {
		t.Fatalf("framing error: %q", got)
	}
	// exactly 8 MiB is accepted
	big := bytes.Repeat([]byte{7}, 8<<20)
	expect(t, other, "$big", "SET", "big", big)
	if got, _ := other.Get([]byte("big")); !bytes.Equal(got, big) {
		t.Fatalf("8 MiB value not read back")
	}
	expect(t, other, "$me", "GET", "keep")
}

func TestDump(t *testing.T) {
	p := startZDB(t, "")
	c := p.dial("unix")
	expect(t, c, "$hello", "SET", "hello", "world")
	p.stop(syscall.SIGTERM)
	out, err := execZDB(t, p.dir, "zdb", "--dump").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "key 68656c6c6f, data d0 +28, 5 bytes, flags 0") {
		t.Fatalf("--dump: %v\n%s", err, out)
	}
}

func TestHelpAndVersion(t *testing.T) {
	out, err := execZDB(t, t.TempDir(), "zdb", "--help").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "--datasize") {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	out, err = execZDB(t, t.TempDir(), "zdb", "-version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v2.0.7") {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	out, err = execZDB(t, t.TempDir(), "zdb", "--datasize", "1k").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "512 KiB") {
		t.Fatalf("bad datasize: %v\n%s", err, out)
	}
}

func TestBackgroundAndLogfile(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "bg.sock")
	logf := filepath.Join(dir, "zdb.log")
	out, err := execZDB(t, dir, "zdb", "--socket", sock, "--background", "--logfile", logf, "--mode", "user").CombinedOutput()
	if err != nil {
		t.Fatalf("--background: %v\n%s", err, out)
	}
	c, err := client.Dial("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("background server not reachable right after the parent returned: %v", err)
	}
	defer c.Close()
	expect(t, c, "$k", "SET", "k", "v")
	// the daemon is not our child: find it through the lock it holds
	pid := pidHolding(t, filepath.Join(dir, "zdb-index", ".lockfile"))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if !strings.Contains(readFile(t, logf), "ready") {
		t.Fatalf("log file lacks the ready line:\n%s", readFile(t, logf))
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 500 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// pidHolding finds the process that has path open (via /proc).
func pidHolding(t *testing.T, path string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name())); l == path {
				return pid
			}
		}
	}
	t.Fatalf("no process holds %s", path)
	return 0
}

func TestRotateTimer(t *testing.T) {
	dir := t.TempDir()
	hook, log := writeHook(t, dir)
	p := startZDB(t, dir, "--hook", hook, "--rotate", "1")
	id := "unix://" + p.sock
	c := p.dial("unix")
	expect(t, c, "$a", "SET", "a", "1")
	waitForLines(t, log, "jump-index "+id+" ./zdb-index/default/i0 ./zdb-index/default/i1 ",
		"jump-data "+id+" ./zdb-data/default/d0 ./zdb-data/default/d1")
	// no write since: no more jumps
	time.Sleep(2500 * time.Millisecond)
	if n := strings.Count(readFile(t, log), "jump-index"); n != 1 {
		t.Fatalf("%d jumps without writes:\n%s", n, readFile(t, log))
	}
	if m := client.ParseInfo(do(t, c, "NSINFO", "default").Str); m["data_current_id"] != "1" {
		t.Fatalf("NSINFO after rotate: %v", m)
	}
}

func TestPreallocatedDataFiles(t *testing.T) {
	p := startZDB(t, "", "--datasize", "32M")
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(p.dir, "zdb-data", "default", "d0"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != dataHeaderSize {
		t.Fatalf("d0 size %d, want %d", st.Size, dataHeaderSize)
	}
	if st.Blocks*512 < 32<<20 {
		t.Skipf("filesystem does not preallocate (%d bytes allocated)", st.Blocks*512)
	}
}

// An offloaded data file is fetched back by the missing-data hook and the
// read is retried; when the hook fails GET answers -Internal Error.
func TestMissingDataHookRestores(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	log := filepath.Join(dir, "hook.log")
	stash := filepath.Join(dir, "stash")
	os.Mkdir(stash, 0o755)
	script := `#!/bin/sh
echo "$*" >> ` + log + `
if [ "$1" = missing-data ]; then
  [ -f "` + dir + `/allow" ] || exit 1
  cp "` + stash + `/$(basename "$3")" "$3" || exit 1
fi
exit 0
`
	os.WriteFile(hook, []byte(script), 0o755)
	p := startZDB(t, dir, "--hook", hook, "--datasize", "512k", "--mode", "seq")
	id := "unix://" + p.sock
	c := p.dial("tcp")
	val := strings.Repeat("a", 300000)
	expect(t, c, seq(0), "SET", "", val)
	expect(t, c, seq(1), "SET", "", "second") // still d0
	expect(t, c, seq(2), "SET", "", val)      // rotates to d1
	d0 := filepath.Join(dir, "zdb-data", "default", "d0")
	if err := os.Rename(d0, filepath.Join(stash, "d0")); err != nil {
		t.Fatal(err)
	}
	expect(t, c, "+OK", "RELOAD", "default") // drop cached handles, as after a restart
	expect(t, c, ":6", "LENGTH", client.SeqKey(1))
	expect(t, c, ":1", "EXISTS", client.SeqKey(1))
	expect(t, c, "-Internal Error", "GET", client.SeqKey(1))
	expect(t, c, "-Internal Error", "GET", client.SeqKey(1))
	if n := strings.Count(waitForLines(t, log, "missing-data "+id+" ./zdb-data/default/d0"), "missing-data"); n != 2 {
		t.Fatalf("missing-data fired %d times, want 2", n)
	}
	os.WriteFile(filepath.Join(dir, "allow"), nil, 0o644)
	expect(t, c, "$second", "GET", client.SeqKey(1))
	expect(t, c, "$"+val, "GET", client.SeqKey(0))
	expect(t, c, "$"+val, "GET", client.SeqKey(2))
	// the active data file missing at start is restored through the hook too
	p.stop(syscall.SIGTERM)
	d1 := filepath.Join(dir, "zdb-data", "default", "d1")
	if err := os.Rename(d1, filepath.Join(stash, "d1")); err != nil {
		t.Fatal(err)
	}
	p.Restart()
	c = p.dial("unix")
	expect(t, c, "$"+val, "GET", client.SeqKey(2))
	expect(t, c, seq(3), "SET", "", "after restore")
	expect(t, c, "$after restore", "GET", client.SeqKey(3))
	waitForLines(t, log, "missing-data "+id+" ./zdb-data/default/d1")
}

// Everything acknowledged before kill -9 is readable after restart.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	p := startZDB(t, "", "--datasize", "1M")
	setup := p.dial("unix")
	expect(t, setup, "+OK", "NSNEW", "s")
	expect(t, setup, "+OK", "NSSET", "s", "mode", "seq")
	var mu sync.Mutex
	acked := map[string][]byte{}
	inflight := map[string][]byte{}
	var seqAcked [][]byte
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := client.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), 5*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			if w%2 == 1 {
				c.Select("s", "")
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := bytes.Repeat([]byte(fmt.Sprintf("%d-%d;", w, i)), 50+i%500)
				if w%2 == 1 {
					id, err := c.Set(nil, v)
					if err != nil {
						return
					}
					mu.Lock()
					seqAcked = append(seqAcked, append(id, v...))
					mu.Unlock()
					continue
				}
				k := fmt.Sprintf("w%d-%d", w, i%300) // overwrites too
				if _, err := c.Set([]byte(k), v); err != nil {
					// in flight at the kill: it may or may not have landed
					mu.Lock()
					inflight[k] = v
					mu.Unlock()
					return
				}
				mu.Lock()
				acked[k] = v
				mu.Unlock()
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	p.Kill()
	close(stop)
	wg.Wait()
	p.Restart()
	c := p.dial("unix")
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 || len(seqAcked) == 0 {
		t.Fatalf("no writes acknowledged")
	}
	for k, v := range acked {
		got, err := c.Get([]byte(k))
		if err == nil && inflight[k] != nil && bytes.Equal(got, inflight[k]) {
			continue // the unacknowledged newer write landed, fine
		}
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("acknowledged %s lost after kill -9 (err %v, %d bytes)", k, err, len(got))
		}
	}
	c.Select("s", "")
	for _, kv := range seqAcked {
		got, err := c.Get(kv[:8])
		if err != nil || !bytes.Equal(got, kv[8:]) {
			t.Fatalf("acknowledged seq id %x lost after kill -9 (err %v)", kv[:8], err)
		}
	}
	t.Logf("verified %d user keys and %d sequential ids", len(acked), len(seqAcked))
}

// A torn last entry (partial index record, or an index record whose
// payload never fully reached the data file) is dropped at start.
func TestTornWriteRecovery(t *testing.T) {
	p := startZDB(t, "", "--mode", "user", "--sync", "--secure", "--synctime", "1")
	c := p.dial("unix")
	expect(t, c, "$a", "SET", "a", "alpha")
	expect(t, c, "$b", "SET", "b", "bravo")
	p.stop(syscall.SIGTERM)
	idx := filepath.Join(p.dir, "zdb-index", "default", "i0")
	dat := filepath.Join(p.dir, "zdb-data", "default", "d0")
	// a complete index record for "c" whose payload is torn in d0
	dsize, _ := os.Stat(dat)
	it := indexItem{idLength: 1, offset: uint32(dsize.Size()), length: 7, crc: crc32c([]byte("charlie")), timestamp: 1}
	rec := make([]byte, indexItemSize)
	it.encode(rec)
	de := dataEntry{idLength: 1, length: 7, crc: it.crc, timestamp: 1}
	dh := make([]byte, dataEntrySize)
	de.encode(dh)
	appendFile(t, dat, append(append(dh, 'c'), "char"...))
	appendFile(t, idx, append(rec, 'c'))
	p.Restart()
	c = p.dial("unix")
	expect(t, c, "$-1", "GET", "c")
	expect(t, c, ":2", "DBSIZE")
	expect(t, c, "$bravo", "GET", "b")
	expect(t, c, "$c", "SET", "c", "charlie")
	expect(t, c, "$charlie", "GET", "c")
	p.stop(syscall.SIGTERM)
	// a partial index record at the end
	appendFile(t, idx, rec[:20])
	p.Restart()
	c = p.dial("unix")
	expect(t, c, ":3", "DBSIZE")
	expect(t, c, "$d", "SET", "d", "delta")
	p.restart(syscall.SIGKILL)
	c = p.dial("unix")
	expect(t, c, "*[$alpha $bravo $charlie $delta]", "MGET", "a", "b", "c", "d")
	p.stop(syscall.SIGTERM)

	// a torn overwrite of "a" keeps the previous version
	appendRecord(t, idx, dat, "a", "ALPHA!", 3, true)
	p.Restart()
	c = p.dial("unix")
	expect(t, c, "$alpha", "GET", "a")
	p.stop(syscall.SIGTERM)
	// a complete overwrite whose old record was never flagged (crash
	// between the two writes): the new one wins and SCAN sees "a" once
	appendRecord(t, idx, dat, "a", "ALPHA!", 4, false)
	p.Restart()
	c = p.dial("unix")
	expect(t, c, "$ALPHA!", "GET", "a")
	expect(t, c, ":4", "DBSIZE")
	if got := scanAll(t, c, "SCAN"); fmt.Sprint(got) != "[b c d a]" {
		t.Fatalf("SCAN after repair = %v", got)
	}
	p.restart(syscall.SIGTERM)
	c = p.dial("unix")
	expect(t, c, "*[$ALPHA! $bravo $charlie $delta]", "MGET", "a", "b", "c", "d")
}

// appendRecord appends a data entry and its index record for key as a
// crashed writer would leave them; torn cuts the payload short.
func appendRecord(t *testing.T, idx, dat, key, value string, ts uint32, torn bool) {
	t.Helper()
	dsize, err := os.Stat(dat)
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := os.ReadFile(idx)
	var prev uint32
	for off := indexHeaderSize; off < len(ib); off += indexItemSize + int(ib[off]) {
		prev = uint32(off)
	}
	crc := crc32c([]byte(value))
	it := indexItem{idLength: uint8(len(key)), offset: uint32(dsize.Size()), length: uint32(len(value)), previous: prev, crc: crc, timestamp: ts}
	rec := make([]byte, indexItemSize)
	it.encode(rec)
	de := dataEntry{idLength: uint8(len(key)), length: uint32(len(value)), crc: crc, timestamp: ts}
	dh := make([]byte, dataEntrySize)
	de.encode(dh)
	payload := value
	if torn {
		payload = value[:len(value)/2]
	}
	appendFile(t, dat, append(append(dh, key...), payload...))
	appendFile(t, idx, append(rec, key...))
}

func appendFile(t *testing.T, p string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// A client that stops reading its replies must not hold up other clients
// of the same namespace: replies are written outside the namespace lock.
func TestStalledReaderDoesNotBlockWriters(t *testing.T) {
	p := startZDB(t, "")
	c := p.dial("unix")
	big := bytes.Repeat([]byte{'b'}, 1<<20)
	expect(t, c, "$big", "SET", "big", big)
	stalled, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	var reqs bytes.Buffer
	for i := 0; i < 64; i++ {
		reqs.WriteString("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
	}
	for i := 0; i < 64; i++ {
		reqs.WriteString("*3\r\n$4\r\nMGET\r\n$3\r\nbig\r\n$3\r\nbig\r\n")
	}
	go stalled.Write(reqs.Bytes()) // and never read
	time.Sleep(200 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		w := p.dial("tcp")
		for i := 0; i < 100; i++ {
			if _, err := w.Set([]byte(fmt.Sprintf("k%d", i)), []byte("v")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("writers blocked by a client that does not read its replies")
	}
}

// Official accepts the same directory for --data and --index (its own
// test suite does), with or without a trailing slash.
func TestSharedDataAndIndexDirectory(t *testing.T) {
	p := startZDB(t, "", "--data", "db/", "--index", "db", "--datasize", "512k")
	c := p.dial("unix")
	expect(t, c, "+OK", "NSNEW", "x")
	expect(t, c, "+OK", "SELECT", "x")
	for i := 0; i < 8; i++ {
		expect(t, c, fmt.Sprintf("$k%d", i), "SET", fmt.Sprintf("k%d", i), strings.Repeat("z", 100000))
	}
	expect(t, c, "+OK", "DEL", "k1")
	p.restart(syscall.SIGTERM)
	c = p.dial("unix")
	expect(t, c, "+OK", "SELECT", "x")
	expect(t, c, ":7", "DBSIZE")
	for _, f := range []string{"zdb-namespace", "i0", "d0", "i1", "d1"} {
		if _, err := os.Stat(filepath.Join(p.dir, "db", "x", f)); err != nil {
			t.Fatalf("db/x/%s: %v", f, err)
		}
	}
}

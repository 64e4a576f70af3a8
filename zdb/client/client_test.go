package client

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/testbin"
)

func TestSeqKeyRoundTrip(t *testing.T) {
	for _, id := range []uint64{0, 1, 255, 256, 1 << 32, 1<<64 - 1} {
		k := SeqKey(id)
		if len(k) != 8 {
			t.Fatalf("SeqKey(%d) has %d bytes", id, len(k))
		}
		back, err := SeqID(k)
		if err != nil || back != id {
			t.Fatalf("SeqID(SeqKey(%d)) = %d, %v", id, back, err)
		}
	}
	if !bytes.Equal(SeqKey(1), []byte{1, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("SeqKey(1) = %x, want little-endian", SeqKey(1))
	}
	if _, err := SeqID([]byte{1}); err == nil {
		t.Fatal("SeqID accepted a 1-byte key")
	}
}

func TestParseInfo(t *testing.T) {
	m := ParseInfo([]byte("# namespace\nname: a\nentries: 3\r\nmode: sequential\n\nbad line\n"))
	if m["name"] != "a" || m["entries"] != "3" || m["mode"] != "sequential" || len(m) != 3 {
		t.Fatalf("ParseInfo = %v", m)
	}
}

// TestAgainstServer drives a real `qsfs zdb` through every helper.
func TestAgainstServer(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "zdb.sock")
	cmd := exec.Command(testbin.Path(t), "zdb", "--socket", sock, "--admin", "pw")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var c *Conn
	for i := 0; ; i++ {
		nc, err := net.Dial("unix", sock)
		if err == nil {
			c = NewConn(nc, 10*time.Second)
			break
		}
		if i > 500 {
			t.Fatalf("zdb not reachable: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	if err := c.NSNew("x"); !IsServerError(err, "Permission denied") {
		t.Fatalf("NSNew before AUTH: %v", err)
	}
	if err := c.Auth("bad"); !IsServerError(err, "Access denied") {
		t.Fatalf("Auth bad: %v", err)
	}
	if err := c.Auth("pw"); err != nil {
		t.Fatal(err)
	}
	if err := c.NSNew("x"); err != nil {
		t.Fatal(err)
	}
	if err := c.NSSet("x", "mode", "seq"); err != nil {
		t.Fatal(err)
	}
	if err := c.NSSet("x", "password", "secret"); err != nil {
		t.Fatal(err)
	}
	if err := c.Select("x", ""); err != nil {
		t.Fatal(err) // public: read-only without the password
	}
	if _, err := c.Set(nil, []byte("v")); !IsServerError(err, "Namespace is in read-only mode") {
		t.Fatalf("read-only SET: %v", err)
	}
	if err := c.Select("x", "secret"); err != nil {
		t.Fatal(err)
	}
	id, err := c.Set(nil, []byte("hello"))
	if err != nil || !bytes.Equal(id, SeqKey(0)) {
		t.Fatalf("Set = %x, %v", id, err)
	}
	if same, err := c.Set(id, []byte("hello")); err != nil || same != nil {
		t.Fatalf("unchanged Set = %x, %v", same, err)
	}
	if v, err := c.Get(id); err != nil || string(v) != "hello" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if err := c.Del(id); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(id); err != nil || v != nil {
		t.Fatalf("Get deleted = %q, %v", v, err)
	}
	info, err := c.NSInfo("x")
	if err != nil || info["mode"] != "sequential" || info["password"] != "yes" {
		t.Fatalf("NSInfo = %v, %v", info, err)
	}
	srv, err := c.Info()
	if err != nil || srv["sequential_key_size"] != "8" {
		t.Fatalf("Info = %v, %v", srv, err)
	}
	// pipelining
	for i := 0; i < 100; i++ {
		c.Send("SET", "", []byte{byte(i)})
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		r, err := c.Receive()
		if err != nil || r.Err() != nil {
			t.Fatalf("pipelined reply %d: %v %v", i, err, r.Err())
		}
	}
}

// TestBulkAlloc reads large and small bulk replies with a caller-supplied
// allocator: large payloads land in its buffers, small ones do not, and a
// payload not followed by CRLF is an error.
func TestBulkAlloc(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80000 bytes
	var stream bytes.Buffer
	fmt.Fprintf(&stream, "$%d\r\n%s\r\n$3\r\nabc\r\n*2\r\n$%d\r\n%s\r\n$-1\r\n", len(big), big, len(big), big)
	var given [][]byte
	alloc := func(n int) []byte {
		b := make([]byte, n+100)
		given = append(given, b)
		return b
	}
	r := bufio.NewReaderSize(&stream, 64<<10)
	rep, err := readReply(r, alloc)
	if err != nil || !bytes.Equal(rep.Str, big) || len(given) != 1 || &given[0][0] != &rep.Str[0] {
		t.Fatalf("large reply: err %v, equal %v, allocations %d", err, bytes.Equal(rep.Str, big), len(given))
	}
	if rep, err = readReply(r, alloc); err != nil || string(rep.Str) != "abc" || len(given) != 1 {
		t.Fatalf("small reply = %q, %v, allocations %d", rep.Str, err, len(given))
	}
	if rep, err = readReply(r, alloc); err != nil || len(rep.Array) != 2 || !bytes.Equal(rep.Array[0].Str, big) ||
		!rep.Array[1].Nil || len(given) != 2 {
		t.Fatalf("array reply: %v, allocations %d", err, len(given))
	}

	bad := bufio.NewReader(strings.NewReader("$3\r\nabcXY"))
	if _, err := readReply(bad, nil); err == nil || !strings.Contains(err.Error(), "CRLF") {
		t.Fatalf("missing CRLF: %v", err)
	}
	short := bufio.NewReader(strings.NewReader(fmt.Sprintf("$%d\r\n%s\r\n", len(big), big)))
	if _, err := readReply(short, func(int) []byte { return make([]byte, 10) }); err == nil {
		t.Fatal("an allocator returning a short buffer was accepted")
	}
}

// TestGather checks gather mode: large payloads are held until Flush and
// then written in their places, the stream byte for byte as without it.
func TestGather(t *testing.T) {
	big1 := bytes.Repeat([]byte("a"), bigBulk)
	big2 := bytes.Repeat([]byte("b"), 3*bigBulk+5)
	var want bytes.Buffer
	fmt.Fprintf(&want, "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$%d\r\n%s\r\n", len(big1), big1)
	fmt.Fprintf(&want, "*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nsmall\r\n")
	fmt.Fprintf(&want, "*3\r\n$3\r\nSET\r\n$2\r\nk2\r\n$%d\r\n%s\r\n", len(big2), big2)

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	got := make(chan []byte)
	var read atomic.Int64
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 4096)
		for buf.Len() < want.Len() {
			n, err := b.Read(chunk)
			read.Add(int64(n))
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
	}()
	c := NewConn(a, 0)
	c.SetGather(true)
	for _, req := range [][]any{{"SET", "", big1}, {"SET", "k1", []byte("small")}, {"SET", []byte("k2"), big2}} {
		if err := c.Send(req...); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := read.Load(); n != 0 {
		t.Fatalf("%d bytes written before Flush", n)
	}
	if len(c.held) != 2 || c.heldSize != len(big1)+len(big2) {
		t.Fatalf("held %d payloads, %d bytes", len(c.held), c.heldSize)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if out := <-got; !bytes.Equal(out, want.Bytes()) {
		t.Fatalf("gathered stream differs from the plain encoding (%d vs %d bytes)", len(out), want.Len())
	}
	if len(c.held) != 0 || c.heldSize != 0 || len(c.wbuf) != 0 {
		t.Fatalf("after Flush: %d held, %d bytes buffered", len(c.held), len(c.wbuf))
	}
}

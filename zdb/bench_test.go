package zdb

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// testServer starts a Server on a temp directory, in this process, with
// the flags extra; its connections are served by srv.handle.
func testServer(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	dir := tb.TempDir()
	opts, err := ParseOptions(append([]string{"--data", dir + "/data", "--index", dir + "/index"}, extra...))
	if err != nil {
		tb.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	log := logrus.NewEntry(l)
	hooks := &hookRunner{log: log}
	store, err := openStore(opts, log, hooks)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(store.Close)
	return &Server{opts: opts, store: store, hooks: hooks, log: log, bootTime: time.Now(), clients: map[*session]struct{}{}}
}

// inProcess starts a testServer and returns a connected client end; the
// server side runs in a goroutine (no process), over net.Pipe or, with
// unixSocket, a unix socket pair.
func inProcess(b *testing.B, unixSocket bool, extra ...string) net.Conn {
	b.Helper()
	srv := testServer(b, extra...)
	cl, sv := net.Pipe()
	if unixSocket {
		cl, sv = socketPair(b)
	}
	go srv.handle(sv)
	b.Cleanup(func() { cl.Close() })
	return cl
}

// socketPair returns the two ends of a unix stream socket pair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return conns[0], conns[1]
}

func req(args ...string) []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&w, "$%d\r\n%s\r\n", len(a), a)
	}
	return w.Bytes()
}

// benchPipelined sends b.N requests in batches of 16 from one writer
// goroutine (reusing its buffer) and reads the replies.
func benchPipelined(b *testing.B, c net.Conn, next func(dst []byte, i int) []byte) {
	r := bufio.NewReaderSize(c, 256<<10)
	const depth = 16
	n := b.N // the writer must not read b.N, which the next run changes
	go func() {
		var batch []byte
		for i := 0; i < n; i += depth {
			batch = batch[:0]
			for j := i; j < min(i+depth, n); j++ {
				batch = next(batch, j)
			}
			if _, err := c.Write(batch); err != nil {
				return
			}
		}
	}()
	b.ResetTimer()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line, err := r.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		switch {
		case line[0] == '-':
			b.Fatalf("error reply %q", line)
		case line[0] == '$' && line[1] != '-':
			size, _ := strconv.Atoi(string(line[1 : len(line)-2]))
			r.Discard(size + 2)
		}
	}
}

func BenchmarkSetUser4K(b *testing.B) {
	c := inProcess(b, false)
	v := string(bytes.Repeat([]byte("v"), 4096))
	benchPipelined(b, c, func(dst []byte, i int) []byte {
		k := strconv.AppendInt([]byte("key-"), int64(i), 10)
		dst = append(dst, "*3\r\n$3\r\nSET\r\n$"...)
		dst = strconv.AppendInt(dst, int64(len(k)), 10)
		dst = append(append(append(dst, "\r\n"...), k...), "\r\n$4096\r\n"...)
		return append(append(dst, v...), "\r\n"...)
	})
}

func BenchmarkSetSeq4K(b *testing.B) {
	c := inProcess(b, false, "--mode", "seq")
	v := string(bytes.Repeat([]byte("v"), 4096))
	r := req("SET", "", v)
	benchPipelined(b, c, func(dst []byte, _ int) []byte { return append(dst, r...) })
}

// BenchmarkSetSeq128KUnix is zdbfs's write path: 128 KiB values appended
// in a sequential namespace, 16 per batch, over a unix socket.
func BenchmarkSetSeq128KUnix(b *testing.B) {
	c := inProcess(b, true, "--mode", "seq")
	r := req("SET", "", string(bytes.Repeat([]byte("v"), 128<<10)))
	b.SetBytes(128 << 10)
	benchPipelined(b, c, func(dst []byte, _ int) []byte { return append(dst, r...) })
}

func BenchmarkGet4K(b *testing.B) {
	c := inProcess(b, false)
	c.Write(req("SET", "k", string(bytes.Repeat([]byte("v"), 4096))))
	bufio.NewReader(c).ReadString('\n')
	r := req("GET", "k")
	benchPipelined(b, c, func(dst []byte, _ int) []byte { return append(dst, r...) })
}

func BenchmarkRequestParser(b *testing.B) {
	one := req("SET", "some-key", string(bytes.Repeat([]byte("v"), 4096)))
	in := bytes.Repeat(one, 64)
	br := bytes.NewReader(in)
	rr := newRequestReader(newConnReader(br, nil, nil, readBufSize))
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := rr.read(); err != nil {
			br.Reset(in)
			rr.r.reset(br, nil)
			if _, err := rr.read(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

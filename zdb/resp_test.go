package zdb

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

func parseAll(input []byte) (reqs [][]string, perrs []string, err error) {
	return parseFrom(newConnReader(bytes.NewReader(input), nil, nil, readBufSize))
}

// socketReader returns a connReader on one end of a unix socket pair (so
// payloads are read with readv) and writes input to the other end in
// chunks of chunk bytes, then closes it.
func socketReader(t testing.TB, input []byte, chunk int) *connReader {
	t.Helper()
	conns := make([]net.Conn, 2)
	conns[0], conns[1] = socketPair(t)
	t.Cleanup(func() { conns[0].Close() })
	go func() {
		defer conns[1].Close()
		for len(input) > 0 {
			n := min(chunk, len(input))
			if _, err := conns[1].Write(input[:n]); err != nil {
				return
			}
			input = input[n:]
		}
	}()
	var rx atomic.Int64
	return newConnReader(conns[0], rawConn(conns[0]), &rx, readBufSize)
}

func parseFrom(cr *connReader) (reqs [][]string, perrs []string, err error) {
	rr := newRequestReader(cr)
	for i := 0; i < 1<<16; i++ {
		args, err := rr.read()
		var pe *protoError
		switch {
		case errors.As(err, &pe):
			perrs = append(perrs, pe.reply)
			if pe.fatal {
				return reqs, perrs, nil
			}
			continue
		case err != nil:
			return reqs, perrs, err
		}
		var req []string
		for _, a := range args {
			req = append(req, string(a))
		}
		reqs = append(reqs, req)
	}
	return reqs, perrs, errors.New("parser did not stop")
}

func TestRequestReader(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		reqs  string
		perrs string
		err   error
	}{
		{"simple", "*1\r\n$4\r\nPING\r\n", "[[PING]]", "[]", io.EOF},
		{"pipelined", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$0\r\n\r\n$2\r\nab\r\n", "[[GET k] [SET  ab]]", "[]", io.EOF},
		{"binary", "*2\r\n$3\r\nSET\r\n$4\r\n\r\n\x00\n\r\n", "[[SET \r\n\x00\n]]", "[]", io.EOF},
		{"inline", "PING\r\n*1\r\n$4\r\nPING\r\n", "[[PING]]", "[Malformed request, array expected]", io.EOF},
		{"empty array", "*0\r\n*1\r\n$1\r\nX\r\n", "[[X]]", "[Missing arguments]", io.EOF},
		{"bad count", "*x\r\n*-1\r\n", "[]", "[Missing arguments Missing arguments]", io.EOF},
		{"bulk expected", "*1\r\n+OK\r\n", "[]", "[Malformed query string]", nil},
		{"nested array", "*1\r\n*1\r\n$1\r\nX\r\n", "[]", "[Malformed query string]", nil},
		{"bad crlf", "*1\r\n$2\r\nabXY", "[]", "[Malformed request]", nil},
		{"negative bulk", "*1\r\n$-1\r\n", "[]", "[Malformed query string]", nil},
		{"truncated", "*2\r\n$3\r\nGET\r\n", "[]", "[]", io.ErrUnexpectedEOF},
		{"too many", "*1025\r\n" + strings.Repeat("$1\r\na\r\n", 1025) + "*1\r\n$4\r\nPING\r\n", "[[PING]]", "[Too many arguments]", io.EOF},
		{"request too big", "*9\r\n$3\r\nSET\r\n" + strings.Repeat("$8388608\r\n"+strings.Repeat("y", 8388608)+"\r\n", 8) + "*1\r\n$4\r\nPING\r\n", "[[PING]]", "[Payload too big]", io.EOF},
		{"payload too big", "*2\r\n$3\r\nSET\r\n$8388609\r\n" + strings.Repeat("x", 8388609) + "\r\n*1\r\n$4\r\nPING\r\n", "[[PING]]", "[Payload too big]", io.EOF},
	}
	for _, tt := range tests {
		for _, via := range []string{"reader", "socket"} {
			t.Run(tt.name+"/"+via, func(t *testing.T) {
				cr := newConnReader(strings.NewReader(tt.in), nil, nil, readBufSize)
				if via == "socket" {
					cr = socketReader(t, []byte(tt.in), 7001)
				}
				reqs, perrs, err := parseFrom(cr)
				if got := sprint(reqs); got != tt.reqs {
					t.Errorf("requests = %q, want %q", got, tt.reqs)
				}
				if got := sprint(perrs); got != tt.perrs {
					t.Errorf("protocol errors = %s, want %s", got, tt.perrs)
				}
				if !errors.Is(err, tt.err) && !(err == nil && tt.err == nil) {
					t.Errorf("err = %v, want %v", err, tt.err)
				}
			})
		}
	}
}

// Held requests keep their arguments while later ones grow the buffer,
// and a request that fails to parse is not held.
func TestRequestReaderHoldsBatch(t *testing.T) {
	var in bytes.Buffer
	var want [][]string
	for i := 0; i < 20; i++ {
		v := strings.Repeat(string(rune('a'+i)), 1+i*9000)
		in.Write(req("SET", "", v))
		want = append(want, []string{"SET", "", v})
	}
	in.WriteString("*1\r\n$-2\r\n")
	in.Write(req("PING"))
	for _, via := range []string{"reader", "socket"} {
		t.Run(via, func(t *testing.T) {
			cr := newConnReader(bytes.NewReader(in.Bytes()), nil, nil, readBufSize)
			if via == "socket" {
				cr = socketReader(t, in.Bytes(), 3000)
			}
			rr := newRequestReader(cr)
			if _, err := rr.read(); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(want); i++ {
				if _, err := rr.readNext(); err != nil {
					t.Fatal(err)
				}
			}
			var pe *protoError
			if _, err := rr.readNext(); !errors.As(err, &pe) || pe.reply != "Malformed query string" {
				t.Fatalf("readNext of a bad request = %v", err)
			}
			if rr.held() != len(want) {
				t.Fatalf("held %d requests, want %d", rr.held(), len(want))
			}
			for i, w := range want {
				var got []string
				for _, a := range rr.request(i) {
					got = append(got, string(a))
				}
				if sprint([][]string{got}) != sprint([][]string{w}) {
					t.Fatalf("request %d = %.40q..., want %.40q...", i, got, w)
				}
			}
		})
	}
}

func sprint(v any) string {
	switch x := v.(type) {
	case [][]string:
		parts := make([]string, len(x))
		for i, r := range x {
			parts[i] = "[" + strings.Join(r, " ") + "]"
		}
		return "[" + strings.Join(parts, " ") + "]"
	case []string:
		return "[" + strings.Join(x, " ") + "]"
	}
	return ""
}

// FuzzRequestReader checks the RESP request parser never panics and always
// terminates on finite input; arguments it returns must lie in the input.
func FuzzRequestReader(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
		"PING\r\n",
		"*-1\r\n",
		"*1\r\n$-5\r\n",
		"*2\r\n$3\r\nGET\r\n",
		"*1025\r\n$1\r\na\r\n",
		"*1\r\n$9000000\r\nabc",
		"\r\n\r\n*\r\n$\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		reqs, _, err := parseAll(in)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error %v", err)
		}
		total := 0
		for _, r := range reqs {
			if len(r) > maxArgs {
				t.Fatalf("%d arguments accepted", len(r))
			}
			for _, a := range r {
				total += len(a)
			}
		}
		if total > len(in) {
			t.Fatalf("parsed %d argument bytes from %d input bytes", total, len(in))
		}
	})
}

func TestLookupCommandPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"get": "GET", "G": "GET", "s": "SET", "SETX": "SETX", "scan": "SCAN", "SCANX": "SCANX",
		"nsi": "NSINFO", "ns": "NSNEW", "": "*", "D": "DEL", "H": "HISTORY", "i": "INFO", "M": "MIRROR",
	} {
		c := lookupCommand([]byte(in))
		if c == nil || c.name != want {
			t.Errorf("lookup %q = %v, want %s", in, c, want)
		}
	}
	for _, in := range []string{"GETX", "FOO", "SETXX"} {
		if c := lookupCommand([]byte(in)); c != nil {
			t.Errorf("lookup %q = %s, want none", in, c.name)
		}
	}
}

package zdbfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

// startZdb starts a qsfs zdb on a unix socket in dir and waits for it.
func startZdb(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "zdb.sock")
	p := start(t, filepath.Join(dir, "zdb.log"), "zdb", "--socket", sock,
		"--data", filepath.Join(dir, "data"), "--index", filepath.Join(dir, "index"))
	t.Cleanup(func() { p.stop(syscall.SIGTERM) })
	waitZdb(t, p, sock)
	return sock
}

// cutProxy listens on path and forwards each connection to the zdb at
// target. On the first connection it forwards the SELECT reply, then waits
// until zdb has sent replies answers to the pipelined requests but passes
// only the first keep of them on before closing both sides: what a client
// sees when zdb's connection breaks after part of a pipeline was answered.
// Later connections are forwarded as they are.
func cutProxy(t *testing.T, path, target string, replies, keep int) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	first := true
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			z, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				return
			}
			go func() { io.Copy(z, c); z.Close() }()
			if !first {
				go func() { io.Copy(c, z); c.Close() }()
				continue
			}
			first = false
			go func() {
				defer c.Close()
				defer z.Close()
				r := bufio.NewReader(z)
				sel, err := readRESP(r)
				if err != nil || string(sel) != "+OK\r\n" {
					t.Errorf("proxy: SELECT reply %q: %v", sel, err)
					return
				}
				c.Write(sel)
				var out []byte
				for i := 0; i < replies; i++ {
					b, err := readRESP(r)
					if err != nil {
						t.Errorf("proxy: reply %d: %v", i, err)
						return
					}
					if i < keep {
						out = append(out, b...)
					}
				}
				c.Write(out)
			}()
		}
	}()
}

// readRESP returns the raw bytes of one simple, error, integer or bulk
// reply.
func readRESP(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return line, err
	}
	if line[0] != '$' {
		return line, nil
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
	if err != nil || n < 0 {
		return line, err
	}
	body := make([]byte, n+2)
	_, err = io.ReadFull(r, body)
	return append(line, body...), err
}

// seqNamespace creates the sequential namespace name on the zdb at sock
// and returns an admin connection that selected it.
func seqNamespace(t *testing.T, sock, name string) *client.Conn {
	t.Helper()
	admin, err := client.Dial("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	if err := admin.NSNew(name); err != nil {
		t.Fatal(err)
	}
	if err := admin.NSSet(name, "mode", "seq"); err != nil {
		t.Fatal(err)
	}
	return admin
}

// TestPipelineResendsOnlyUnanswered cuts the connection after zdb stored a
// whole pipeline of new values but only part of the answers reached zdbfs:
// the retry on a new connection must resend only the unanswered requests,
// so the answered values are not stored twice (a leaked id each).
func TestPipelineResendsOnlyUnanswered(t *testing.T) {
	dir := t.TempDir()
	sock := startZdb(t, dir)
	admin := seqNamespace(t, sock, "t")

	const sets, keep = 100, 40
	proxy := filepath.Join(dir, "proxy.sock")
	cutProxy(t, proxy, sock, sets, keep)
	ns := newNamespace(Backend{Unix: proxy, Namespace: "t"}, 2)
	defer ns.close()
	vals := make([][]byte, sets)
	for i := range vals {
		vals[i] = []byte(fmt.Sprintf("value %03d", i))
	}
	ids, err := ns.insertMany(vals)
	if err != nil {
		t.Fatalf("insertMany across a cut connection: %v", err)
	}

	if err := admin.Select("t", ""); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for i, id := range ids {
		if seen[id] {
			t.Fatalf("id %d returned twice", id)
		}
		seen[id] = true
		got, err := admin.Get(client.SeqKey(id))
		if err != nil || !bytes.Equal(got, vals[i]) {
			t.Fatalf("value %d at id %d: %q, %v; want %q", i, id, got, err, vals[i])
		}
	}
	info, err := admin.NSInfo("t")
	if err != nil {
		t.Fatal(err)
	}
	// the unanswered requests were stored by zdb before the cut and again
	// on the retry; the answered ones only once
	entries, _ := strconv.Atoi(info["entries"])
	if want := sets + (sets - keep); entries != want {
		t.Fatalf("namespace holds %d entries, want %d (%d values, %d stored twice because their answer was lost)",
			entries, want, sets, sets-keep)
	}
}

// TestPipelineKeepsReplyErrorAcrossCut cuts the connection after zdb
// answered one request of a pipeline with an error: the error must reach
// the caller even though the retry of the unanswered rest succeeds.
func TestPipelineKeepsReplyErrorAcrossCut(t *testing.T) {
	dir := t.TempDir()
	sock := startZdb(t, dir)
	admin := seqNamespace(t, sock, "t")
	if err := admin.Select("t", ""); err != nil {
		t.Fatal(err)
	}
	const sets, keep, bad = 100, 40, 10
	ids := make([]uint64, sets)
	vals := make([][]byte, sets)
	for i := range ids {
		key, err := admin.Set(nil, []byte("old"))
		if err != nil {
			t.Fatal(err)
		}
		if ids[i], err = client.SeqID(key); err != nil {
			t.Fatal(err)
		}
		vals[i] = []byte(fmt.Sprintf("new %03d", i))
	}
	ids[bad] = 1 << 30 // no such id: zdb answers an error

	proxy := filepath.Join(dir, "proxy.sock")
	cutProxy(t, proxy, sock, sets, keep)
	ns := newNamespace(Backend{Unix: proxy, Namespace: "t"}, 2)
	defer ns.close()
	err := ns.setMany(ids, vals)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("id %d", ids[bad])) {
		t.Fatalf("setMany with an error reply before a cut connection: %v, want the error of id %d", err, ids[bad])
	}
}

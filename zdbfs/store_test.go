package zdbfs

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
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
// until zdb has answered all of sets pipelined SETs of new ids but passes
// only the first keep answers on before closing both sides: what a client
// sees when zdb's connection breaks after part of a pipeline was answered.
// Later connections are forwarded as they are.
func cutProxy(t *testing.T, path, target string, sets, keep int) {
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
				const selectOK = "+OK\r\n"
				const setReply = 4 + 8 + 2 // "$8\r\n" id "\r\n"
				buf := make([]byte, len(selectOK)+sets*setReply)
				if _, err := io.ReadFull(z, buf[:len(selectOK)]); err != nil || string(buf[:len(selectOK)]) != selectOK {
					t.Errorf("proxy: SELECT reply %q: %v", buf[:len(selectOK)], err)
					return
				}
				c.Write(buf[:len(selectOK)])
				if _, err := io.ReadFull(z, buf[len(selectOK):]); err != nil {
					t.Errorf("proxy: SET replies: %v", err)
					return
				}
				c.Write(buf[len(selectOK) : len(selectOK)+keep*setReply])
			}()
		}
	}()
}

// TestPipelineResendsOnlyUnanswered cuts the connection after zdb stored a
// whole pipeline of new values but only part of the answers reached zdbfs:
// the retry on a new connection must resend only the unanswered requests,
// so the answered values are not stored twice (a leaked id each).
func TestPipelineResendsOnlyUnanswered(t *testing.T) {
	dir := t.TempDir()
	sock := startZdb(t, dir)
	admin, err := client.Dial("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.NSNew("t"); err != nil {
		t.Fatal(err)
	}
	if err := admin.NSSet("t", "mode", "seq"); err != nil {
		t.Fatal(err)
	}

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

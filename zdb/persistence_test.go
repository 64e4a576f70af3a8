package zdb

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

func TestRestartReloadsBothModes(t *testing.T) {
	p := startZDB(t, "", "--datasize", "512k")
	c := p.dial("unix")
	expect(t, c, "+OK", "NSNEW", "s")
	expect(t, c, "+OK", "NSSET", "s", "mode", "seq")
	expect(t, c, "+OK", "NSNEW", "u")
	expect(t, c, "+OK", "NSSET", "u", "password", "pw")
	expect(t, c, "+OK", "NSSET", "u", "maxsize", "100000000")
	big := strings.Repeat("x", 100000)
	expect(t, c, "+OK", "SELECT", "u", "pw")
	for i := 0; i < 12; i++ { // rotates at 512k
		expect(t, c, fmt.Sprintf("$k%d", i), "SET", fmt.Sprintf("k%d", i), fmt.Sprintf("%d%s", i, big))
	}
	expect(t, c, "$k3", "SET", "k3", "updated")
	expect(t, c, "+OK", "DEL", "k4")
	expect(t, c, "+OK", "SELECT", "s")
	for i := 0; i < 12; i++ {
		expect(t, c, seq(uint64(i)), "SET", "", fmt.Sprintf("%d%s", i, big))
	}
	expect(t, c, seq(2), "SET", client.SeqKey(2), "updated")
	expect(t, c, "+OK", "DEL", client.SeqKey(5))
	before := client.ParseInfo(do(t, c, "NSINFO", "s").Str)
	if before["data_current_id"] == "0" {
		t.Fatalf("no rotation happened: %v", before)
	}

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		p.restart(sig)
		c = p.dial("tcp")
		expect(t, c, "*[$default $s $u]", "NSLIST")
		expect(t, c, "+OK", "SELECT", "u")
		expect(t, c, "-Namespace is in read-only mode", "SET", "k0", "v")
		expect(t, c, "+OK", "SELECT", "u", "pw")
		expect(t, c, ":11", "DBSIZE")
		expect(t, c, "$updated", "GET", "k3")
		expect(t, c, "$-1", "GET", "k4")
		expect(t, c, "$"+"11"+big, "GET", "k11")
		expect(t, c, "$0"+big, "GET", "k0")
		if m := client.ParseInfo(do(t, c, "NSINFO", "u").Str); m["data_limits_bytes"] != "100000000" || m["public"] != "yes" {
			t.Fatalf("descriptor not reloaded: %v", m)
		}
		expect(t, c, "+OK", "SELECT", "s")
		expect(t, c, ":11", "DBSIZE")
		expect(t, c, "$updated", "GET", client.SeqKey(2))
		expect(t, c, "$-1", "GET", client.SeqKey(5))
		expect(t, c, "$7"+big, "GET", client.SeqKey(7))
		after := client.ParseInfo(do(t, c, "NSINFO", "s").Str)
		for _, f := range []string{"entries", "next_internal_id", "data_size_bytes", "data_current_id", "data_current_offset", "mode"} {
			if before[f] != after[f] {
				t.Fatalf("after %v restart %s = %q, was %q", sig, f, after[f], before[f])
			}
		}
	}
	expect(t, c, seq(13), "SET", "", "next") // 12 inserts and 1 update; deletes consume no id
}

// writeHook writes a hook script that appends its argv to log and exits
// with the status in <dir>/status-<event> when that file exists.
func writeHook(t *testing.T, dir string) (hook, log string) {
	t.Helper()
	hook = filepath.Join(dir, "hook.sh")
	log = filepath.Join(dir, "hook.log")
	script := `#!/bin/sh
echo "$*" >> ` + log + `
if [ -f "` + dir + `/status-$1" ]; then exit "$(cat "` + dir + `/status-$1")"; fi
exit 0
`
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return hook, log
}

func waitForLines(t *testing.T, log string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		missing := ""
		for _, w := range want {
			if !strings.Contains(string(b), w+"\n") {
				missing = w
				break
			}
		}
		if missing == "" {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("hook log lacks %q:\n%s", missing, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHooks(t *testing.T) {
	dir := t.TempDir()
	hook, log := writeHook(t, dir)
	p := startZDB(t, dir, "--hook", hook, "--datasize", "512k")
	id := "unix://" + p.sock
	c := p.dial("tcp")
	expect(t, c, "+OK", "NSNEW", "h")
	expect(t, c, "+OK", "NSSET", "h", "public", "0")
	expect(t, c, "+OK", "SELECT", "h")
	expect(t, c, "$a", "SET", "a", "1")
	expect(t, c, "$a", "SET", "a", "2") // flags the first entry: i0 dirty
	expect(t, c, "+OK", "NSJUMP")
	expect(t, c, "$b", "SET", "b", strings.Repeat("z", 400000))
	expect(t, c, "$c", "SET", "c", strings.Repeat("z", 400000)) // datasize rotation
	expect(t, c, "+OK", "SELECT", "default")
	expect(t, c, "+OK", "NSNEW", "gone")
	expect(t, c, "+OK", "NSDEL", "gone")
	expect(t, c, "+OK", "RELOAD", "h")
	expect(t, c, "-Namespace not found", "RELOAD", "gone")
	waitForLines(t, log,
		"namespace-reloaded "+id+" h",
		"namespaces-init "+id+" ./zdb-index ./zdb-data",
		"ready "+id,
		"namespace-created "+id+" h",
		"namespace-updated "+id+" h",
		"jump-index "+id+" ./zdb-index/h/i0 ./zdb-index/h/i1 0",
		"jump-data "+id+" ./zdb-data/h/d0 ./zdb-data/h/d1",
		"jump-index "+id+" ./zdb-index/h/i1 ./zdb-index/h/i2 ",
		"jump-data "+id+" ./zdb-data/h/d1 ./zdb-data/h/d2",
		"namespace-deleted "+id+" gone",
	)
	hooks := do(t, c, "HOOKS")
	if len(hooks.Array) < 8 || len(hooks.Array[0].Array) != 6 {
		t.Fatalf("HOOKS = %s", fmtReply(hooks))
	}
	if code := p.stop(syscall.SIGTERM); code != 143 {
		t.Fatalf("exit status %d, want 143", code)
	}
	text := waitForLines(t, log, "close "+id,
		"namespace-closing "+id+" default ./zdb-index/default/i0 ./zdb-data/default/d0 ",
		"namespace-closing "+id+" h ./zdb-index/h/i2 ./zdb-data/h/d2 ")
	if strings.Index(text, "close "+id) > strings.Index(text, "namespace-closing") {
		t.Fatalf("close must come before namespace-closing:\n%s", text)
	}
	if strings.Index(text, "namespaces-init") > strings.Index(text, "ready") {
		t.Fatalf("namespaces-init must come before ready:\n%s", text)
	}
}

func TestReadyHookFailureStops(t *testing.T) {
	dir := t.TempDir()
	hook, log := writeHook(t, dir)
	os.WriteFile(filepath.Join(dir, "status-ready"), []byte("3"), 0o644)
	sock := filepath.Join(dir, "zdb.sock")
	cmd := execZDB(t, dir, "zdb", "--socket", sock, "--hook", hook)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("zdb should exit 0 after a failed ready hook: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "unsuccessful init hook, stopping (code: 3)") {
		t.Fatalf("output: %s", out)
	}
	text := waitForLines(t, log, "ready unix://"+sock, "namespace-closing unix://"+sock+" default ./zdb-index/default/i0 ./zdb-data/default/d0 ")
	if strings.Contains(text, "close ") {
		t.Fatalf("no close event expected:\n%s", text)
	}
}

func TestJumpIndexHookKeepsDirtyListOnFailure(t *testing.T) {
	dir := t.TempDir()
	hook, log := writeHook(t, dir)
	os.WriteFile(filepath.Join(dir, "status-jump-index"), []byte("3"), 0o644)
	p := startZDB(t, dir, "--hook", hook)
	id := "unix://" + p.sock
	c := p.dial("unix")
	expect(t, c, "$a", "SET", "a", "1")
	expect(t, c, "$a", "SET", "a", "2")
	expect(t, c, "*[:0]", "INDEX", "DIRTY")
	expect(t, c, "+OK", "NSJUMP")
	expect(t, c, "*[:0]", "INDEX", "DIRTY")
	expect(t, c, "$a", "SET", "a", "3") // flags a=2, still in i0
	expect(t, c, "*[:0]", "INDEX", "DIRTY")
	os.Remove(filepath.Join(dir, "status-jump-index"))
	expect(t, c, "+OK", "NSJUMP")
	waitForLines(t, log, "jump-index "+id+" ./zdb-index/default/i0 ./zdb-index/default/i1 0",
		"jump-index "+id+" ./zdb-index/default/i1 ./zdb-index/default/i2 0")
	expect(t, c, "*[]", "INDEX", "DIRTY")
	expect(t, c, "$a", "SET", "a", "4") // flags a=3 in i1
	expect(t, c, "*[:1]", "INDEX", "DIRTY")
	expect(t, c, "+OK", "INDEX", "DIRTY", "RESET")
	expect(t, c, "*[]", "INDEX", "DIRTY")
}

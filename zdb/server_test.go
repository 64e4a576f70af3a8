package zdb

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/qsfs/qsfs/zdb/client"
)

func TestUserModeCommands(t *testing.T) {
	p := startZDB(t, "")
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			c := p.dial(network)
			k := "k-" + network
			expect(t, c, "+PONG", "PING")
			expect(t, c, "+PONG", "PING", "ignored")
			expect(t, c, "$"+k, "SET", k, "v1")
			expect(t, c, "$v1", "GET", k)
			expect(t, c, "$-1", "SET", k, "v1")
			expect(t, c, "$"+k, "SETX", k, "value-2")
			expect(t, c, "$value-2", "GET", k)
			expect(t, c, ":1", "EXISTS", k)
			expect(t, c, ":0", "EXISTS", "nope")
			expect(t, c, ":7", "LENGTH", k)
			expect(t, c, "$-1", "LENGTH", "nope")
			expect(t, c, ":1", "CHECK", k)
			expect(t, c, "$-1", "CHECK", "nope")
			if r := do(t, c, "KEYTIME", k); r.Kind != client.KindInt || r.Int < 1600000000 {
				t.Fatalf("KEYTIME = %s", fmtReply(r))
			}
			expect(t, c, "*[$value-2 $-1]", "MGET", k, "nope")
			expect(t, c, "+OK", "DEL", k)
			expect(t, c, "-Key not found", "DEL", k)
			expect(t, c, "$-1", "GET", k)
			expect(t, c, "-Invalid argument, key needed", "SET", "", "x")
			expect(t, c, "-Unexpected arguments", "SET", "a")
			expect(t, c, "-Key too large", "SET", strings.Repeat("k", 256), "x")
			expect(t, c, "-Invalid key", "GET", strings.Repeat("k", 256))
			expect(t, c, "-Command not supported", "FOOBAR")
			// prefix matching as official: "G" is GET, "S" is SET
			expect(t, c, "$"+k, "S", k, "abbrev")
			expect(t, c, "$abbrev", "g", k)
			expect(t, c, "-This is not a valid command", "*")
			expect(t, c, "-Command disabled in release code, not yet available", "KSCAN", "k")
			expect(t, c, "-Unauthorized", "STOP")
			expect(t, c, "-Invalid argument", "KEYCUR", "")
			if r := do(t, c, "TIME"); len(r.Array) != 2 {
				t.Fatalf("TIME = %s", fmtReply(r))
			}
		})
	}
	c := p.dial("tcp")
	expect(t, c, ":2", "DBSIZE")
	info := string(do(t, c, "INFO").Str)
	for _, want := range []string{"# server", "server_name: 0-db (zdb)", "sequential_key_size: 8", "data_version: 3", "index_version: 4", "# stats"} {
		if !strings.Contains(info, want) {
			t.Errorf("INFO lacks %q:\n%s", want, info)
		}
	}
}

func TestSequentialMode(t *testing.T) {
	p := startZDB(t, "")
	c := p.dial("unix")
	expect(t, c, "+OK", "NSNEW", "s")
	expect(t, c, "+OK", "NSSET", "s", "mode", "seq")
	expect(t, c, "+OK", "SELECT", "s")
	expect(t, c, seq(0), "SET", "", "first")
	expect(t, c, seq(1), "SET", "", "second")
	expect(t, c, seq(2), "SET", "", "third")
	expect(t, c, "$second", "GET", client.SeqKey(1))
	// update keeps the id and consumes the next one
	expect(t, c, seq(1), "SET", client.SeqKey(1), "second-v2")
	expect(t, c, "$-1", "SET", client.SeqKey(1), "second-v2")
	expect(t, c, "$second-v2", "GET", client.SeqKey(1))
	expect(t, c, "$-1", "GET", client.SeqKey(3))
	expect(t, c, "+OK", "DEL", client.SeqKey(2))
	expect(t, c, "-Key not found", "DEL", client.SeqKey(2))
	expect(t, c, "-Invalid key, only update authorized", "SET", client.SeqKey(2), "again")
	expect(t, c, "-Invalid key, only update authorized", "SET", client.SeqKey(99), "x")
	expect(t, c, "-Invalid key, only update authorized", "SET", "mykey", "x")
	// the update took id 3, the delete consumed none (official's own test
	// suite and official-behaviour.md §2.4 agree)
	expect(t, c, seq(4), "SET", "", "fifth")
	// lookups use the low 32 bits only
	expect(t, c, "$second-v2", "GET", []byte{1, 0, 0, 0, 1, 0, 0, 0})
	expect(t, c, "$-1", "GET", []byte{1})
	expect(t, c, ":3", "DBSIZE")
	expect(t, c, "-Cannot change mode of used namespace", "NSSET", "s", "mode", "user")
	info := client.ParseInfo(do(t, c, "NSINFO", "s").Str)
	if info["mode"] != "sequential" || info["next_internal_id"] != "0x500000000000000" || info["entries"] != "3" {
		t.Fatalf("NSINFO: %v", info)
	}
	expect(t, c, "-Invalid property value (expected: user, seq)", "NSSET", "s", "mode", "foo")
}

func TestSingleModeInstance(t *testing.T) {
	p := startZDB(t, "", "--mode", "seq")
	c := p.dial("tcp")
	expect(t, c, seq(0), "SET", "", "a")
	expect(t, c, "+OK", "NSNEW", "x")
	expect(t, c, "-This server instance is configured to use a single runtime mode", "NSSET", "x", "mode", "user")
	if m := client.ParseInfo(do(t, c, "NSINFO", "x").Str)["mode"]; m != "sequential" {
		t.Fatalf("mode = %q", m)
	}
}

func TestNamespacesAndSelect(t *testing.T) {
	p := startZDB(t, "")
	c := p.dial("tcp")
	expect(t, c, "+OK", "NSNEW", "pub")
	expect(t, c, "-This namespace is not available", "NSNEW", "pub")
	expect(t, c, "-This name is not allowed", "NSNEW", "a/b")
	expect(t, c, "-This name is not allowed", "NSNEW", "default")
	expect(t, c, "-Namespace too long", "NSNEW", strings.Repeat("n", 129))
	expect(t, c, "-Unexpected arguments", "NSNEW")
	expect(t, c, "*[$default $pub]", "NSLIST")
	expect(t, c, "+OK", "NSSET", "pub", "password", "secret")
	// public with password: read-only without it
	o := p.dial("tcp")
	expect(t, o, "+OK", "SELECT", "pub")
	expect(t, o, "-Namespace is in read-only mode", "SET", "k", "v")
	expect(t, o, "-Access denied", "SELECT", "pub", "wrong")
	expect(t, o, "+OK", "SELECT", "pub", "secret")
	expect(t, o, "$k", "SET", "k", "v")
	// private with password
	expect(t, c, "+OK", "NSSET", "pub", "public", "0")
	expect(t, o, "-Namespace protected and private", "SELECT", "pub")
	expect(t, o, "-Namespace not found", "SELECT", "missing")
	expect(t, o, "-Invalid argument", "SELECT")
	// password given for a namespace without one is ignored
	expect(t, c, "+OK", "NSNEW", "open")
	expect(t, o, "+OK", "SELECT", "open", "whatever")
	expect(t, o, "$a", "SET", "a", "b")
	info := do(t, c, "NSINFO", "pub").Str
	fields := []string{"# namespace", "name", "entries", "public", "worm", "locked", "password", "data_size_bytes",
		"data_size_mb", "data_limits_bytes", "index_size_bytes", "index_size_kb", "next_internal_id", "mode",
		"stats_index_io_errors", "stats_index_io_error_last", "stats_index_faults", "stats_data_io_errors",
		"stats_data_io_error_last", "stats_data_faults", "index_disk_freespace_bytes", "index_disk_freespace_mb",
		"data_disk_freespace_bytes", "data_disk_freespace_mb"}
	lines := strings.Split(strings.TrimSpace(string(info)), "\n")
	for i, f := range fields {
		if i >= len(lines) || !strings.HasPrefix(lines[i], f) {
			t.Fatalf("NSINFO line %d: want %q, got:\n%s", i, f, info)
		}
	}
	m := client.ParseInfo(info)
	if m["public"] != "no" || m["password"] != "yes" || m["entries"] != "1" || m["data_size_bytes"] != "1" || m["mode"] != "userkey" {
		t.Fatalf("NSINFO values: %v", m)
	}
	// NSSET properties
	expect(t, c, "-Invalid property", "NSSET", "pub", "color", "red")
	expect(t, c, "-Namespace not found", "NSSET", "nope", "public", "1")
	expect(t, c, "-Cannot update default namespace", "NSSET", "default", "password", "x")
	expect(t, c, `-Invalid property value "abc" (expected: size in bytes)`, "NSSET", "open", "maxsize", "abc")
	expect(t, c, "+OK", "NSSET", "open", "maxsize", "10")
	expect(t, o, "-No space left on this namespace", "SET", "big", "0123456789")
	expect(t, o, "$a", "SET", "a", "012345678") // overwrite counts the net size
	expect(t, c, "+OK", "NSSET", "open", "worm", "1")
	expect(t, o, "-Namespace is protected by worm mode", "SET", "a", "x")
	expect(t, o, "-Cannot delete a key when namespace is in worm mode", "DEL", "a")
	expect(t, c, "+OK", "NSSET", "open", "worm", "0")
	expect(t, c, "+OK", "NSSET", "open", "lock", "1")
	expect(t, o, "-Namespace is temporarily locked (read-only)", "SET", "a", "y")
	expect(t, o, "$012345678", "GET", "a")
	expect(t, c, "+OK", "NSSET", "open", "lock", "0")
	expect(t, c, "+OK", "NSSET", "open", "freeze", "1")
	expect(t, o, "-Namespace is temporarily frozen (read-write disabled)", "GET", "a")
	expect(t, o, ":1", "DBSIZE")
	expect(t, c, "+OK", "NSSET", "open", "freeze", "0")
	// NSDEL
	expect(t, c, "-Cannot remove default namespace", "NSDEL", "default")
	expect(t, c, "-This namespace doesn't exists", "NSDEL", "nope")
	expect(t, o, "-Cannot remove namespace you're currently using.", "NSDEL", "open")
	expect(t, c, "+OK", "NSDEL", "open")
	expect(t, o, "-Your active namespace is not available anymore (probably removed).", "GET", "a")
}

func TestAdminAndProtect(t *testing.T) {
	p := startZDB(t, "", "--admin", "adminpw", "--protect")
	c := p.dial("tcp")
	expect(t, c, "-Namespace is in read-only mode", "SET", "k", "v")
	expect(t, c, "-Permission denied", "NSNEW", "x")
	expect(t, c, "-Access denied", "AUTH", "bad")
	expect(t, c, "-Access denied", "AUTH", "SECURE")
	expect(t, c, "+OK", "AUTH", "adminpw")
	expect(t, c, "+OK", "NSNEW", "x")
	expect(t, c, "+OK", "SELECT", "default", "adminpw")
	expect(t, c, "$k", "SET", "k", "v")
	// secure challenge
	d := p.dial("unix")
	expect(t, d, "-No CHALLENGE requested, secure authentication not available", "AUTH", "SECURE", "00")
	ch := do(t, d, "AUTH", "SECURE", "CHALLENGE")
	if ch.Kind != client.KindStatus || len(ch.Str) != 16 {
		t.Fatalf("challenge = %s", fmtReply(ch))
	}
	h := secureHash(string(ch.Str), "adminpw")
	expect(t, d, "+OK", "AUTH", "SECURE", h)
	expect(t, d, "-No CHALLENGE requested, secure authentication not available", "AUTH", "SECURE", h)
	ch = do(t, d, "AUTH", "SECURE", "CHALLENGE")
	expect(t, d, "+OK", "SELECT", "default", "SECURE", secureHash(string(ch.Str), "adminpw"))
	expect(t, d, "$k2", "SET", "k2", "v")
	o := startZDB(t, "")
	expect(t, o.dial("tcp"), "-Authentication disabled", "AUTH", "x")
}

// FLUSH really empties a private, password-protected namespace (official
// 2.0.7 answers OK and deletes nothing); zdbfs's temp cleanup relies on
// its header landing at id 0 afterwards.
func TestFlushEmptiesPrivateNamespace(t *testing.T) {
	p := startZDB(t, "")
	c := p.dial("unix")
	for _, cmd := range [][]any{{"NSNEW", "zdbfs-temp"}, {"NSSET", "zdbfs-temp", "mode", "seq"},
		{"NSSET", "zdbfs-temp", "public", "0"}, {"NSSET", "zdbfs-temp", "password", "hello"}} {
		expect(t, c, "+OK", cmd...)
	}
	expect(t, c, "-Namespace protected and private", "SELECT", "zdbfs-temp")
	expect(t, c, "+OK", "SELECT", "zdbfs-temp", "hello")
	for i := 0; i < 40; i++ {
		expect(t, c, seq(uint64(i)), "SET", "", fmt.Sprintf("block-%d", i))
	}
	expect(t, c, "+OK", "NSJUMP")
	expect(t, c, seq(40), "SET", "", "after jump")
	expect(t, c, "+OK", "FLUSH")
	expect(t, c, ":0", "DBSIZE")
	expect(t, c, "$-1", "GET", client.SeqKey(3))
	expect(t, c, seq(0), "SET", "", "ZDBFST header")
	expect(t, c, "$ZDBFST header", "GET", client.SeqKey(0))
	expect(t, c, "+OK", "SELECT", "default")
	expect(t, c, "-Flushing public namespace denied", "FLUSH")
	// survives a restart
	p.restart(syscall.SIGTERM)
	c = p.dial("unix")
	expect(t, c, "+OK", "SELECT", "zdbfs-temp", "hello")
	expect(t, c, ":1", "DBSIZE")
	expect(t, c, "$ZDBFST header", "GET", client.SeqKey(0))
}

func TestPipeliningAndConcurrentClients(t *testing.T) {
	p := startZDB(t, "")
	c := p.dial("tcp")
	const n = 2000
	for i := 0; i < n; i++ {
		c.Send("SET", fmt.Sprintf("p%d", i), fmt.Sprintf("v%d", i))
	}
	c.Send("DBSIZE")
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r, err := c.Receive()
		if err != nil || string(r.Str) != fmt.Sprintf("p%d", i) {
			t.Fatalf("reply %d: %s %v", i, fmtReply(r), err)
		}
	}
	if r, _ := c.Receive(); r.Int != n {
		t.Fatalf("DBSIZE = %s", fmtReply(r))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			network := "tcp"
			if g%2 == 0 {
				network = "unix"
			}
			cc := p.dial(network)
			for i := 0; i < 200; i++ {
				k, v := fmt.Sprintf("g%d-%d", g, i), bytes.Repeat([]byte{byte(g)}, 100+i)
				if _, err := cc.Set([]byte(k), v); err != nil {
					errs <- err
					return
				}
				got, err := cc.Get([]byte(k))
				if err != nil || !bytes.Equal(got, v) {
					errs <- fmt.Errorf("get %s: %v", k, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	expect(t, c, fmt.Sprintf(":%d", n+16*200), "DBSIZE")
}

func TestRedisCLI(t *testing.T) {
	cli := needTool(t, "redis-cli")
	p := startZDB(t, "")
	run := func(args ...string) string {
		out, err := exec.Command(cli, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	tcp := []string{"-h", "127.0.0.1", "-p", fmt.Sprint(p.port)}
	unix := []string{"-s", p.sock}
	if got := run(append(tcp, "PING")...); got != "PONG" {
		t.Fatalf("PING over tcp: %q", got)
	}
	if got := run(append(unix, "SET", "hello", "world")...); got != "hello" {
		t.Fatalf("SET over unix: %q", got)
	}
	if got := run(append(tcp, "GET", "hello")...); got != "world" {
		t.Fatalf("GET over tcp: %q", got)
	}
	if got := run(append(unix, "NSNEW", "cli")...); got != "OK" {
		t.Fatalf("NSNEW: %q", got)
	}
	if got := run(append(tcp, "NSLIST")...); got != "default\ncli" {
		t.Fatalf("NSLIST: %q", got)
	}
	if got := run(append(tcp, "DEL", "hello")...); got != "OK" {
		t.Fatalf("DEL: %q", got)
	}
	if got := run(append(tcp, "DEL", "hello")...); !strings.Contains(got, "Key not found") {
		t.Fatalf("second DEL: %q", got)
	}
}

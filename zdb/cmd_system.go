package zdb

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// System and admin commands: AUTH, INFO, WAIT, HOOKS, INDEX, DATA.

func cmdAuth(c *session, args [][]byte) {
	admin := c.srv.opts.Admin
	if admin == "" {
		c.rw.err("Authentication disabled")
		return
	}
	if len(args) < 2 {
		c.rw.err("Unexpected arguments")
		return
	}
	if len(args) >= 3 && strings.EqualFold(string(args[1]), "SECURE") {
		if strings.EqualFold(string(args[2]), "CHALLENGE") {
			var b [8]byte
			rand.Read(b[:])
			c.challenge = hex.EncodeToString(b[:])
			c.rw.status(c.challenge)
			return
		}
		if c.challenge == "" {
			c.rw.err("No CHALLENGE requested, secure authentication not available")
			return
		}
		want := secureHash(c.challenge, admin)
		c.challenge = "" // single use
		if subtle.ConstantTimeCompare([]byte(want), args[2]) != 1 {
			c.rw.err("Access denied")
			return
		}
		c.admin = true
		c.rw.status("OK")
		return
	}
	if len(args[1]) > 128 {
		c.rw.err("Password too long")
		return
	}
	if subtle.ConstantTimeCompare([]byte(admin), args[1]) != 1 {
		c.rw.err("Access denied")
		return
	}
	c.admin = true
	c.rw.status("OK")
}

// Version is the official release this server is compatible with.
const Version = "v2.0.7"

func cmdInfo(c *session, _ [][]byte) {
	s := c.srv
	st := &s.store.stats
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# server\n")
	p("server_name: 0-db (zdb)\n")
	p("server_revision: %s (commit qsfs)\n", Version)
	p("engine_revision: %s (commit qsfs)\n", Version)
	p("instance_id: %s\n", s.instanceTag)
	p("boot_time: %d\n", s.bootTime.Unix())
	p("uptime: %d\n", int64(time.Since(s.bootTime).Seconds()))
	p("\n# clients\n")
	p("clients_lifetime: %d\n", st.clientsLifetime.Load())
	p("\n# internals\n")
	p("sequential_key_size: 8\n")
	p("data_version: %d\n", dataVersion)
	p("index_version: %d\n", indexVersion)
	p("\n# stats\n")
	p("commands_executed: %d\n", st.cmdExecuted.Load())
	p("commands_failed: %d\n", st.cmdFailed.Load())
	p("commands_unauthorized: %d\n", st.cmdUnauthorized.Load())
	p("index_disk_read_failed: %d\n", st.indexReadFailed.Load())
	p("index_disk_write_failed: %d\n", st.indexWriteFailed.Load())
	p("data_disk_read_failed: %d\n", st.dataReadFailed.Load())
	p("data_disk_write_failed: %d\n", st.dataWriteFailed.Load())
	for _, kv := range []struct {
		name string
		v    int64
	}{
		{"index_disk_read", st.indexRead.Load()}, {"index_disk_write", st.indexWrite.Load()},
		{"data_disk_read", st.dataRead.Load()}, {"data_disk_write", st.dataWrite.Load()},
		{"network_rx", st.netRx.Load()}, {"network_tx", st.netTx.Load()},
	} {
		p("%s_bytes: %d\n", kv.name, kv.v)
		p("%s_mb: %.2f\n", kv.name, mb(kv.v))
	}
	c.rw.bulkString(b.String())
}

// waitRegistry holds clients blocked in WAIT.
type waitRegistry struct {
	count   atomic.Int32 // fast path: no waiter, no lock
	mu      sync.Mutex
	waiters map[*waiter]struct{}
}

type waiter struct {
	ns   *Namespace
	cmd  string // table name or "*"
	done chan string
}

func (w *waitRegistry) add(ns *Namespace, cmd string) *waiter {
	wt := &waiter{ns: ns, cmd: cmd, done: make(chan string, 1)}
	w.mu.Lock()
	if w.waiters == nil {
		w.waiters = make(map[*waiter]struct{})
	}
	w.waiters[wt] = struct{}{}
	w.count.Store(int32(len(w.waiters)))
	w.mu.Unlock()
	return wt
}

func (w *waitRegistry) remove(wt *waiter) {
	w.mu.Lock()
	delete(w.waiters, wt)
	w.count.Store(int32(len(w.waiters)))
	w.mu.Unlock()
}

// notify wakes the waiters of ns watching cmd.
func (w *waitRegistry) notify(ns *Namespace, cmd string) {
	if w.count.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for wt := range w.waiters {
		if wt.ns == ns && (wt.cmd == "*" || wt.cmd == cmd) {
			select {
			case wt.done <- cmd:
			default:
			}
			delete(w.waiters, wt)
		}
	}
	w.count.Store(int32(len(w.waiters)))
}

func cmdWait(c *session, args [][]byte) {
	if len(args) != 2 && len(args) != 3 {
		c.rw.err("Invalid arguments")
		return
	}
	cmd := lookupCommand(args[1])
	if cmd == nil {
		c.rw.err("Unknown command to watch")
		return
	}
	timeout := 5000 * time.Millisecond
	if len(args) == 3 {
		if len(args[2]) > 16 {
			c.rw.err("Invalid timeout")
			return
		}
		ms := atoll(args[2])
		if ms < 100 || ms > 30*60*1000 {
			c.rw.err("Invalid timeout")
			return
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	// pending replies go out before blocking
	c.w.Flush()
	wt := c.srv.waiters.add(c.ns, cmd.name)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case name := <-wt.done:
		c.rw.status(name)
	case <-t.C:
		c.srv.waiters.remove(wt)
		c.rw.err("Timeout")
	}
}

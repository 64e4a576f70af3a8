package zdb

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Namespace commands: NSNEW, NSDEL, NSLIST, NSSET, NSINFO, NSJUMP, SELECT,
// RELOAD, FLUSH.

func (c *session) nsArg(args [][]byte, n int) (string, bool) {
	if !c.validate(args, n, false) {
		return "", false
	}
	if len(args[1]) > maxNameLength {
		c.rw.err("Namespace too long")
		return "", false
	}
	return string(args[1]), true
}

func cmdNSNew(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	name, ok := c.nsArg(args, 2)
	if !ok {
		return
	}
	if err := c.srv.store.Create(name); err != nil {
		if _, ok := err.(errReply); ok {
			c.replyErr(err)
			return
		}
		c.srv.log.WithField("ns", name).Errorf("create namespace: %v", err)
		c.rw.err("Could not create namespace")
		return
	}
	c.rw.status("OK")
}

func cmdNSDel(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	name, ok := c.nsArg(args, 2)
	if !ok {
		return
	}
	if name == defaultNamespace {
		c.rw.err("Cannot remove default namespace")
		return
	}
	ns := c.srv.store.Get(name)
	if ns == nil {
		c.rw.err("This namespace doesn't exists")
		return
	}
	if ns == c.ns {
		c.rw.err("Cannot remove namespace you're currently using.")
		return
	}
	if err := c.srv.store.Delete(ns); err != nil {
		c.srv.log.WithField("ns", name).Errorf("delete namespace: %v", err)
		c.rw.err("Could not delete this namespace")
		return
	}
	c.rw.status("OK")
}

func cmdNSList(c *session, _ [][]byte) {
	names := c.srv.store.Names()
	c.rw.array(len(names))
	for _, n := range names {
		c.rw.bulkString(n)
	}
}

func cmdNSInfo(c *session, args [][]byte) {
	name, ok := c.nsArg(args, 2)
	if !ok {
		return
	}
	ns := c.srv.store.Get(name)
	if ns == nil {
		c.rw.err("Namespace not found")
		return
	}
	c.rw.bulkString(ns.infoText(c.admin))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func mb(n int64) float64 { return float64(n) / (1024 * 1024) }

func diskFree(path string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

// infoText renders NSINFO: field names, order and formatting as official.
func (ns *Namespace) infoText(admin bool) string {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# namespace\n")
	p("name: %s\n", ns.name)
	p("entries: %d\n", ns.entries)
	p("public: %s\n", yesNo(ns.desc.public))
	p("worm: %s\n", yesNo(ns.desc.worm))
	p("locked: %s\n", yesNo(ns.locked))
	p("password: %s\n", yesNo(ns.desc.password != ""))
	p("data_size_bytes: %d\n", ns.dataSize)
	p("data_size_mb: %.2f\n", mb(ns.dataSize))
	p("data_limits_bytes: %d\n", ns.desc.maxsize)
	p("index_size_bytes: %d\n", ns.indexSize)
	p("index_size_kb: %.2f\n", float64(ns.indexSize)/1024)
	p("next_internal_id: 0x%08x\n", bswap64(ns.nextEntry))
	p("mode: %s\n", ns.modeName())
	p("stats_index_io_errors: %d\n", ns.stats.indexIOErrors.Load())
	p("stats_index_io_error_last: %d\n", ns.stats.indexIOLast.Load())
	p("stats_index_faults: %d\n", ns.stats.indexFaults.Load())
	p("stats_data_io_errors: %d\n", ns.stats.dataIOErrors.Load())
	p("stats_data_io_error_last: %d\n", ns.stats.dataIOLast.Load())
	p("stats_data_faults: %d\n", ns.stats.dataFaults.Load())
	if ns.desc.maxsize > 0 {
		avail := int64(ns.desc.maxsize) - ns.dataSize
		if avail < 0 {
			avail = 0
		}
		p("space_available: %d\n", avail)
	}
	if free, ok := diskFree(ns.idxDir); ok {
		p("index_disk_freespace_bytes: %d\n", free)
		p("index_disk_freespace_mb: %.2f\n", mb(free))
	}
	if free, ok := diskFree(ns.datDir); ok {
		p("data_disk_freespace_bytes: %d\n", free)
		p("data_disk_freespace_mb: %.2f\n", mb(free))
	}
	if admin {
		if ns.desc.password != "" {
			p("password_raw: %s\n", ns.desc.password)
		}
		p("data_path: %s\n", ns.datDir)
		p("data_active: %s\n", ns.dataPath(ns.curID))
		p("index_path: %s\n", ns.idxDir)
		p("index_active: %s\n", ns.indexPath(ns.curID))
		p("data_current_id: %d\n", ns.curID)
		p("data_current_offset: %d\n", ns.datEnd)
	}
	return b.String()
}

func bswap64(v uint64) uint64 {
	var r uint64
	for i := 0; i < 8; i++ {
		r = r<<8 | (v >> (8 * i) & 0xff)
	}
	return r
}

func parseBool01(v string) (bool, bool) {
	switch v {
	case "0":
		return false, true
	case "1":
		return true, true
	}
	return false, false
}

func cmdNSSet(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	name, ok := c.nsArg(args, 4)
	if !ok {
		return
	}
	if len(args[3]) > 63 {
		c.rw.err("Invalid value")
		return
	}
	prop, value := string(args[2]), string(args[3])
	ns := c.srv.store.Get(name)
	if ns == nil {
		c.rw.err("Namespace not found")
		return
	}
	if name == defaultNamespace && prop != "mode" && prop != "lock" && prop != "freeze" {
		c.rw.err("Cannot update default namespace")
		return
	}
	invalid := func(expected string) {
		c.rw.err(fmt.Sprintf("Invalid property value %q (expected: %s)", value, expected))
	}
	ns.mu.Lock()
	switch prop {
	case "maxsize":
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			ns.mu.Unlock()
			invalid("size in bytes")
			return
		}
		ns.desc.maxsize = n
	case "password":
		if value == "*" {
			ns.desc.password = ""
		} else {
			ns.desc.password = value
		}
	case "public", "worm", "lock", "freeze":
		b, ok := parseBool01(value)
		if !ok {
			ns.mu.Unlock()
			invalid("0, 1")
			return
		}
		switch prop {
		case "public":
			ns.desc.public = b
		case "worm":
			ns.desc.worm = b
		case "lock":
			ns.locked = b
		case "freeze":
			ns.frozen = b
		}
	case "mode":
		var m uint8
		switch value {
		case "user":
			m = modeUser
		case "seq":
			m = modeSeq
		default:
			ns.mu.Unlock()
			c.rw.err("Invalid property value (expected: user, seq)")
			return
		}
		if c.srv.opts.Mode != modeMixed {
			ns.mu.Unlock()
			c.rw.err("This server instance is configured to use a single runtime mode")
			return
		}
		if m != ns.mode {
			if ns.nextEntry > 0 || ns.curID > 0 {
				ns.mu.Unlock()
				c.rw.err("Cannot change mode of used namespace")
				return
			}
			if _, err := ns.idxW.WriteAt([]byte{m}, 28); err != nil {
				ns.mu.Unlock()
				c.replyErr(fmt.Errorf("set mode of %s: %w", name, err))
				return
			}
			ns.mode = m
		}
	default:
		ns.mu.Unlock()
		c.rw.err("Invalid property")
		return
	}
	err := ns.writeDescriptor()
	ns.mu.Unlock()
	if err != nil {
		c.replyErr(err)
		return
	}
	c.srv.hooks.run("namespace-updated", false, name)
	c.rw.status("OK")
}

func cmdNSJump(c *session, _ [][]byte) {
	if !c.requireAdmin() {
		return
	}
	ns := c.ns
	ns.mu.Lock()
	err := ns.jump()
	ns.mu.Unlock()
	if err != nil {
		c.replyErr(err)
		return
	}
	c.rw.status("OK")
}

func secureHash(challenge, password string) string {
	h := sha1.Sum([]byte(challenge + ":" + password))
	return hex.EncodeToString(h[:])
}

func cmdSelect(c *session, args [][]byte) {
	if len(args) < 2 {
		c.rw.err("Invalid argument")
		return
	}
	if len(args[1]) > maxNameLength {
		c.rw.err("Namespace too long")
		return
	}
	ns := c.srv.store.Get(string(args[1]))
	if ns == nil {
		c.rw.err("Namespace not found")
		return
	}
	ns.mu.RLock()
	password, public := ns.desc.password, ns.desc.public
	ns.mu.RUnlock()
	writable := true
	if password != "" {
		switch {
		case len(args) < 3:
			if !public {
				c.rw.err("Namespace protected and private")
				return
			}
			writable = false
		case len(args) >= 4 && strings.EqualFold(string(args[2]), "SECURE"):
			if c.challenge == "" {
				c.rw.err("No CHALLENGE requested, secure authentication not available")
				return
			}
			want := secureHash(c.challenge, password)
			if subtle.ConstantTimeCompare([]byte(want), args[3]) != 1 {
				c.rw.err("Access denied")
				return
			}
		default:
			if len(args[2]) > 255 {
				c.rw.err("Password too long")
				return
			}
			if subtle.ConstantTimeCompare([]byte(password), args[2]) != 1 {
				c.rw.err("Access denied")
				return
			}
		}
	}
	c.ns = ns
	c.writable = writable
	c.rw.status("OK")
}

func cmdReload(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	name, ok := c.nsArg(args, 2)
	if !ok {
		return
	}
	ns := c.srv.store.Get(name)
	if ns == nil {
		c.rw.err("Namespace not found")
		return
	}
	ns.mu.Lock()
	ns.closeFiles()
	err := ns.load()
	ns.mu.Unlock()
	if err != nil {
		c.replyErr(fmt.Errorf("reload namespace %s: %w", name, err))
		return
	}
	c.srv.hooks.run("namespace-reloaded", false, name)
	c.rw.status("OK")
}

func cmdFlush(c *session, _ [][]byte) {
	ns := c.ns
	ns.mu.RLock()
	denied := ns.desc.public || ns.desc.password == ""
	ns.mu.RUnlock()
	if denied {
		c.rw.err("Flushing public namespace denied")
		return
	}
	if err := ns.flush(); err != nil {
		c.srv.log.WithField("ns", ns.name).Errorf("flush: %v", err)
		c.rw.err("Internal Server Error")
		return
	}
	c.rw.status("OK")
}

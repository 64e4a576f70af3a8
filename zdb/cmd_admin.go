package zdb

import (
	"strings"
)

// Admin inspection commands: HOOKS, INDEX DIRTY [RESET], DATA RAW.

func cmdHooks(c *session, _ [][]byte) {
	if !c.requireAdmin() {
		return
	}
	runs := c.srv.hooks.list()
	c.rw.array(len(runs))
	for _, r := range runs {
		c.rw.array(6)
		c.rw.bulkString(r.event)
		c.rw.array(len(r.args))
		for _, a := range r.args {
			c.rw.bulkString(a)
		}
		c.rw.integer(int64(r.pid))
		c.rw.integer(r.created)
		c.rw.integer(r.finished)
		c.rw.integer(int64(r.status))
	}
}

func cmdIndex(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	if len(args) < 2 {
		c.rw.err("Missing arguments")
		return
	}
	if !strings.EqualFold(string(args[1]), "DIRTY") {
		c.rw.err("Unknown subcommand")
		return
	}
	ns := c.ns
	if len(args) >= 3 && strings.EqualFold(string(args[2]), "RESET") {
		ns.mu.Lock()
		ns.dirty = make(map[uint32]struct{})
		ns.mu.Unlock()
		c.rw.status("OK")
		return
	}
	ns.mu.RLock()
	ids := ns.dirtyIDs()
	ns.mu.RUnlock()
	c.rw.array(len(ids))
	for _, id := range ids {
		c.rw.integer(int64(id))
	}
}

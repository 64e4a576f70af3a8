package zdb

// Key/value commands: SET, GET, MGET, DEL, EXISTS, CHECK, LENGTH, KEYTIME,
// DBSIZE.

func cmdSet(c *session, args [][]byte) {
	ts := now32()
	if len(args) == 4 {
		if !c.requireAdmin() {
			return
		}
		ts = uint32(atoll(args[3]))
	} else if !c.validate(args, 3, true) {
		return
	}
	key, value := args[1], args[2]
	if len(key) > maxKeyLength {
		c.rw.err("Key too large")
		return
	}
	if !c.writable {
		c.rw.err(string(errReadOnly))
		return
	}
	out, err := c.ns.Set(key, value, ts)
	if err != nil {
		c.replyErr(err)
		return
	}
	if out == nil {
		c.rw.null()
		return
	}
	c.rw.bulk(out)
}

// readKey looks key up under the namespace read lock and calls fn with the
// live entry (nil when missing or deleted).
func (c *session) readKey(key []byte, fn func(ns *Namespace, e *entry)) bool {
	if len(key) > maxKeyLength {
		c.rw.err("Invalid key")
		return false
	}
	ns := c.ns
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	if ns.removed.Load() {
		c.rw.err(string(errNSRemoved))
		return false
	}
	if ns.frozen {
		c.rw.err(string(errFrozen))
		return false
	}
	fn(ns, ns.liveLookup(key))
	return true
}

func cmdGet(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	c.readKey(args[1], func(ns *Namespace, e *entry) {
		if e == nil {
			c.rw.null()
			return
		}
		buf, err := ns.readPayload(e, c.scratch)
		if err != nil {
			c.srv.log.WithField("ns", ns.name).Warnf("read payload: %v", err)
			c.rw.err("Internal Error")
			return
		}
		c.keepScratch(buf)
		c.rw.bulk(buf)
	})
}

func cmdMGet(c *session, args [][]byte) {
	if len(args) < 2 {
		c.rw.err("Unexpected arguments")
		return
	}
	ns := c.ns
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	if ns.frozen {
		c.rw.err(string(errFrozen))
		return
	}
	c.rw.array(len(args) - 1)
	for _, key := range args[1:] {
		var e *entry
		if len(key) <= maxKeyLength {
			e = ns.liveLookup(key)
		}
		if e == nil {
			c.rw.null()
			continue
		}
		buf, err := ns.readPayload(e, c.scratch)
		if err != nil {
			c.rw.null()
			continue
		}
		c.keepScratch(buf)
		c.rw.bulk(buf)
	}
}

func cmdDel(c *session, args [][]byte) {
	ts := now32()
	if len(args) == 3 {
		if !c.requireAdmin() {
			return
		}
		ts = uint32(atoll(args[2]))
	} else if !c.validate(args, 2, false) {
		return
	}
	if len(args[1]) > maxKeyLength {
		c.rw.err("Invalid key")
		return
	}
	if !c.writable {
		c.rw.err(string(errReadOnly))
		return
	}
	if err := c.ns.Del(args[1], ts); err != nil {
		c.replyErr(err)
		return
	}
	c.rw.status("OK")
}

func cmdExists(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	c.readKey(args[1], func(_ *Namespace, e *entry) {
		if e == nil {
			c.rw.integer(0)
		} else {
			c.rw.integer(1)
		}
	})
}

func cmdCheck(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	c.readKey(args[1], func(ns *Namespace, e *entry) {
		if e == nil {
			c.rw.null()
			return
		}
		buf, err := ns.readPayload(e, c.scratch)
		if err != nil || crc32c(buf) != e.crc {
			c.rw.integer(0)
			return
		}
		c.keepScratch(buf)
		c.rw.integer(1)
	})
}

func cmdLength(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	c.readKey(args[1], func(_ *Namespace, e *entry) {
		if e == nil {
			c.rw.null()
			return
		}
		c.rw.integer(int64(e.length))
	})
}

func cmdKeyTime(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	c.readKey(args[1], func(_ *Namespace, e *entry) {
		if e == nil {
			c.rw.null()
			return
		}
		c.rw.integer(int64(e.ts))
	})
}

func cmdDBSize(c *session, _ [][]byte) {
	c.ns.mu.RLock()
	n := c.ns.entries
	c.ns.mu.RUnlock()
	c.rw.integer(n)
}

// keepScratch keeps buf for the next read unless it is large.
func (c *session) keepScratch(buf []byte) {
	if cap(buf) > keepBuf {
		c.scratch = nil
		return
	}
	c.scratch = buf[:0]
}

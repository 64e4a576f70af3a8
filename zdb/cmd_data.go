package zdb

// Key/value commands: SET, GET, MGET, DEL, EXISTS, CHECK, LENGTH, KEYTIME,
// DBSIZE.

import (
	"net"
	"strconv"
)

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
	out, err := c.ns.Set(key, value, ts, &c.idBuf)
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

// keyLookup is what a read command needs from the index, copied under the
// namespace read lock. Replies are written only after the lock is released,
// so a client that stops reading its replies never holds up writers.
type keyLookup struct {
	e       entry
	found   bool
	payload []byte // with payloadBytes, the value (in the session scratch buffer)
	readErr error
	file    filePayload // with payloadFile, where a large value lies (inFile)
	inFile  bool
}

// payloadMode says what lookupKey fetches besides the entry.
type payloadMode int

const (
	payloadNone  payloadMode = iota
	payloadBytes             // the value, read into memory
	payloadFile              // a large value's place in its data file, else the value
)

// lookupKey looks key up (live entries only). It answers the error reply
// itself and returns false for an oversized key, a frozen or a removed
// namespace.
func (c *session) lookupKey(key []byte, want payloadMode) (keyLookup, bool) {
	var kl keyLookup
	if len(key) > maxKeyLength {
		c.rw.err("Invalid key")
		return kl, false
	}
	ns := c.ns
	ns.mu.RLock()
	if ns.removed.Load() {
		ns.mu.RUnlock()
		c.rw.err(string(errNSRemoved))
		return kl, false
	}
	if ns.frozen {
		ns.mu.RUnlock()
		c.rw.err(string(errFrozen))
		return kl, false
	}
	if e := ns.liveLookup(key); e != nil {
		kl.e, kl.found = *e, true
		if want == payloadFile {
			kl.file, kl.inFile = ns.payloadInFile(e)
		}
		if want != payloadNone && !kl.inFile {
			kl.payload, kl.readErr = ns.readPayload(e, c.scratch)
		}
	}
	ns.mu.RUnlock()
	if kl.readErr != nil {
		c.srv.log.WithField("ns", ns.name).Warnf("read payload: %v", kl.readErr)
	}
	return kl, true
}

func cmdGet(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	kl, ok := c.lookupKey(args[1], payloadFile)
	switch {
	case !ok:
	case !kl.found:
		c.rw.null()
	case kl.inFile:
		if err := c.sendBulkFile(kl.file); err != nil {
			// the reply is cut short: the client must not read on
			c.srv.log.WithField("ns", c.ns.name).Warnf("GET: %v", err)
			c.closeConn = true
		}
	case kl.readErr != nil:
		c.rw.err("Internal Error")
	default:
		c.writeBulkDirect(kl.payload)
		c.keepScratch(kl.payload)
	}
}

// largeReply is the payload size from which GET writes with writev(2)
// straight from the read buffer instead of copying through the buffered
// writer.
const largeReply = 32 << 10

// writeBulkDirect writes a bulk reply; large payloads go out in one
// writev(2) after the pending replies, without being copied.
func (c *session) writeBulkDirect(b []byte) {
	if len(b) < largeReply {
		c.rw.bulk(b)
		return
	}
	if err := c.w.Flush(); err != nil {
		return
	}
	var hdr [24]byte
	h := append(hdr[:0], '$')
	h = strconv.AppendInt(h, int64(len(b)), 10)
	h = append(h, '\r', '\n')
	bufs := net.Buffers{h, b, []byte("\r\n")}
	n, _ := bufs.WriteTo(c.nc) // a failed write shows up on the next read
	c.srv.store.stats.netTx.Add(n)
}

// mgetChunk bounds how much MGET gathers under the lock before writing.
const mgetChunk = 16 << 20

func cmdMGet(c *session, args [][]byte) {
	if len(args) < 2 {
		c.rw.err("Unexpected arguments")
		return
	}
	ns := c.ns
	keys := args[1:]
	// values are gathered into the scratch buffer under the lock and
	// written after it is released, at most mgetChunk at a time
	buf := c.scratch[:0]
	ends := make([]int, 0, len(keys)) // -1: nil element
	for done := 0; done < len(keys); {
		buf, ends = buf[:0], ends[:0]
		ns.mu.RLock()
		if ns.frozen || ns.removed.Load() {
			frozen := ns.frozen
			ns.mu.RUnlock()
			if done > 0 {
				// cannot happen with official clients; keep the reply well formed
				for ; done < len(keys); done++ {
					c.rw.null()
				}
				return
			}
			if frozen {
				c.rw.err(string(errFrozen))
			} else {
				c.rw.err(string(errNSRemoved))
			}
			return
		}
		for ; done < len(keys) && len(buf) < mgetChunk; done++ {
			var e *entry
			if key := keys[done]; len(key) <= maxKeyLength {
				e = ns.liveLookup(key)
			}
			if e == nil {
				ends = append(ends, -1)
				continue
			}
			start := len(buf)
			buf = grow(buf, int(e.length))
			got, err := ns.readPayload(e, buf[start:start:len(buf)])
			if err != nil {
				buf = buf[:start]
				ends = append(ends, -1)
				continue
			}
			if len(got) > 0 && &got[0] != &buf[start] {
				copy(buf[start:], got)
			}
			ends = append(ends, len(buf))
		}
		ns.mu.RUnlock()
		if len(ends) == done {
			c.rw.array(len(keys))
		}
		prev := 0
		for _, end := range ends {
			if end < 0 {
				c.rw.null()
				continue
			}
			c.rw.bulk(buf[prev:end])
			prev = end
		}
	}
	c.keepScratch(buf)
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
	if kl, ok := c.lookupKey(args[1], payloadNone); ok {
		if kl.found {
			c.rw.integer(1)
		} else {
			c.rw.integer(0)
		}
	}
}

func cmdCheck(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	kl, ok := c.lookupKey(args[1], payloadBytes)
	switch {
	case !ok:
	case !kl.found:
		c.rw.null()
	case kl.readErr != nil || crc32c(kl.payload) != kl.e.crc:
		c.rw.integer(0)
	default:
		c.keepScratch(kl.payload)
		c.rw.integer(1)
	}
}

func cmdLength(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	if kl, ok := c.lookupKey(args[1], payloadNone); ok {
		if kl.found {
			c.rw.integer(int64(kl.e.length))
		} else {
			c.rw.null()
		}
	}
}

func cmdKeyTime(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	if kl, ok := c.lookupKey(args[1], payloadNone); ok {
		if kl.found {
			c.rw.integer(int64(kl.e.ts))
		} else {
			c.rw.null()
		}
	}
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

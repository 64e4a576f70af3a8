package zdb

// Batched SETs: when a connection has pipelined several SET requests, the
// ones that can only succeed (new sequential ids, updates of distinct live
// sequential ids with a changed value, or new user keys, within the size
// limit and the current data file) are appended together: one pwritev(2)
// for their data entries, then one write(2) for their index records (an
// update then rewrites its slot's record in place, as one by one), then
// their replies in request order. Anything else (a user-key update, an
// update that may leave the value unchanged, a rotation boundary, a full
// namespace, a failed write) goes through the one-request path, which
// answers exactly as without batching.

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/sirupsen/logrus"
)

const (
	// maxBatch bounds the requests of one batch
	maxBatch = 32
	// maxBatchBytes stops reading more requests into a batch once the
	// held arguments reach it (it bounds the per-connection buffer)
	maxBatchBytes = 1 << 20
)

// setRequest is one SET of a batch.
type setRequest struct {
	key, value []byte
	crc        uint32
	name       string  // command name (SET or SETX) for WAIT
	off        uint32  // data entry offset
	idxOff     uint32  // index record offset
	id         [8]byte // sequential mode: the id given
	seq        bool    // stored in sequential mode: the reply is id
	update     bool    // sequential mode: an update of id slot
	slot       uint64  // the id updated
	oldLen     int64   // the length of the value updated
	err        error   // the error reply of a failed in-place rewrite
}

// batchable reports whether args is a SET a batch may take: the form
// without timestamp, a key that fits, on a writable connection.
func (c *session) batchable(args [][]byte) bool {
	if len(args) != 3 || !c.writable || c.ns == nil || len(args[1]) > maxKeyLength {
		return false
	}
	cmd := lookupCommand(args[0])
	return cmd != nil && (cmd.name == "SET" || cmd.name == "SETX")
}

// runBatch runs the SET just read together with the requests the client
// has already sent after it. Requests are read while more bytes are
// buffered (the same condition under which replies are held back without
// batching), the next one is a SET, and the argument chunks lent out by
// the server stay below maxLentBatch; a request of another kind, or a
// read error, ends the batch and is handled after the SETs.
func (c *session) runBatch() {
	var readErr error
	other := false
	// each payload's checksum is computed as soon as it is read, while it
	// is still in the CPU cache
	c.crcs = append(c.crcs[:0], crc32c(c.rr.request(0)[2]))
	for c.rr.held() < maxBatch && c.rr.heldBytes() < maxBatchBytes && c.r.buffered() > 0 &&
		c.rr.pool.lentBytes() < maxLentBatch {
		args, err := c.rr.readNext()
		if err != nil {
			readErr = err
			break
		}
		if !c.batchable(args) {
			other = true
			break
		}
		c.crcs = append(c.crcs, crc32c(args[2]))
	}
	sets := c.rr.held()
	if other {
		sets--
	}
	c.runSets(sets)
	if c.closeConn {
		return
	}
	if other {
		c.dispatch(c.rr.request(sets))
		if c.closeConn {
			return
		}
	}
	if readErr != nil && c.readFailed(readErr) {
		c.closeConn = true
	}
}

// runSets executes the first n held requests (all batchable SETs) in
// order, in batches where possible and one by one otherwise.
func (c *session) runSets(n int) {
	batching := true
	for i := 0; i < n && !c.closeConn; {
		k := 0
		if batching && n-i >= 2 {
			// after a failed write, the rest goes one by one
			k, batching = c.setBatch(i, n)
		}
		if k == 0 {
			c.dispatch(c.rr.request(i))
			i++
			continue
		}
		i += k
	}
}

// setBatch offers held requests i..n-1 to the namespace and answers the
// ones it wrote; it returns how many (0 or at least 2), and false when a
// batch write failed.
func (c *session) setBatch(i, n int) (int, bool) {
	ns := c.ns
	c.batch = c.batch[:0]
	for j := i; j < n; j++ {
		args := c.rr.request(j)
		c.batch = append(c.batch, setRequest{
			key: args[1], value: args[2], crc: c.crcs[j],
			name: lookupCommand(args[0]).name,
		})
	}
	k, err := ns.setBatch(c.batch, now32())
	if (k > 0 || err != nil) && c.srv.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		if err != nil {
			c.srv.log.WithField("ns", ns.name).Debugf("batch write failed, one by one: %v", err)
		} else {
			c.srv.log.WithField("ns", ns.name).Debugf("batched %d SETs", k)
		}
	}
	st := &c.srv.store.stats
	for j := 0; j < k; j++ {
		r := &c.batch[j]
		st.cmdExecuted.Add(1)
		if r.err != nil {
			c.replyErr(r.err)
		} else if r.seq {
			c.rw.bulk(r.id[:])
		} else {
			c.rw.bulk(r.key)
		}
		c.srv.waiters.notify(ns, r.name)
	}
	clear(c.batch) // do not keep the arguments alive
	return k, err == nil
}

// setBatch appends the longest prefix of reqs that the one-request path
// would store without an error, a rotation or a read: new sequential ids,
// updates of live sequential ids (each id once per batch, with a value
// that differs by length or checksum, outside worm mode), or new user
// keys not repeated in the batch, within maxsize and the current data
// file. Data entries are written with one pwritev, then the appended
// index records with one write; an update then rewrites its slot in
// place, as the one-request path does. The in-memory index changes only
// once the appends succeeded. It returns the number of requests answered
// from the batch: 0 (nothing written to the index, the caller falls back
// to one by one, with the write error if a write failed) or at least 2,
// or, when an in-place rewrite failed, up to that request (its err set
// as the one-request path would answer) with the error.
func (ns *Namespace) setBatch(reqs []setRequest, ts uint32) (int, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed.Load() || ns.frozen || ns.locked {
		return 0, nil
	}
	seq := ns.mode == modeSeq
	limit := int64(ns.store.opts.DataSize)
	datEnd, size := ns.datEnd, ns.dataSize
	k := 0
	for ; k < len(reqs); k++ {
		r := &reqs[k]
		keyLen := len(r.key)
		maxsize := int64(ns.desc.maxsize)
		r.seq, r.update, r.oldLen, r.err = seq, false, 0, nil
		if seq {
			if keyLen != 0 {
				// an update: the one-request path reads nothing back
				// and answers no error for it
				e := ns.liveLookup(r.key)
				if e == nil || ns.desc.worm || (e.crc == r.crc && e.length == uint32(len(r.value))) {
					break
				}
				r.slot = uint64(binary.LittleEndian.Uint32(r.key))
				if repeatedSlot(reqs[:k], r.slot) {
					break
				}
				r.update, r.oldLen = true, int64(e.length)
				maxsize += r.oldLen
			}
			keyLen = 8
		} else if keyLen == 0 || ns.liveLookup(r.key) != nil || repeatedKey(reqs[:k], r.key) {
			break
		}
		if ns.desc.maxsize > 0 && size+int64(len(r.value)) > maxsize {
			break
		}
		if datEnd+int64(len(r.value)) > limit {
			break
		}
		datEnd += int64(dataEntrySize + keyLen + len(r.value))
		size += int64(len(r.value)) - r.oldLen
	}
	if k < 2 {
		return 0, nil
	}
	reqs = reqs[:k]

	// data entries: headers and keys in one scratch buffer, sized up front
	// so that the iovecs pointing into it stay valid
	if need := k * (dataEntrySize + maxKeyLength); cap(ns.bhdr) < need {
		ns.bhdr = make([]byte, 0, need)
	}
	hdr, iov := ns.bhdr[:0], ns.biov[:0]
	off, prev := ns.datEnd, ns.datPrev
	for j := range reqs {
		r := &reqs[j]
		key := r.key
		if seq {
			id := ns.nextEntry + uint64(j)
			if r.update {
				id = r.slot
			}
			binary.LittleEndian.PutUint64(r.id[:], id)
			key = r.id[:]
		}
		h0 := len(hdr)
		hdr = hdr[:h0+dataEntrySize+len(key)]
		de := dataEntry{idLength: uint8(len(key)), length: uint32(len(r.value)), previous: prev, crc: r.crc, timestamp: ts}
		de.encode(hdr[h0:])
		copy(hdr[h0+dataEntrySize:], key)
		iov = append(iov, hdr[h0:], r.value)
		r.off, prev = uint32(off), uint32(off)
		off += int64(dataEntrySize + len(key) + len(r.value))
	}
	err := pwriteAll(ns.datW, iov, ns.datEnd)
	clear(iov)
	ns.biov = iov[:0]
	if err != nil {
		return 0, fmt.Errorf("append data entries to %s: %w", ns.dataPath(ns.curID), err)
	}

	// index records: for an update, the copy of the old record flagged
	// deleted, which consumes a sequential id
	if need := k * (indexItemSize + maxKeyLength); cap(ns.bidx) < need {
		ns.bidx = make([]byte, 0, need)
	}
	ib := ns.bidx[:0]
	ioff, iprev := ns.idxEnd, ns.idxPrev
	for j := range reqs {
		r := &reqs[j]
		key := r.key
		if seq {
			key = r.id[:]
		}
		var it indexItem
		if r.update {
			cp := ns.seq[r.slot]
			cp.flags |= flagDeleted
			it = cp.item(iprev)
			it.idLength = uint8(len(key))
		} else {
			it = indexItem{
				idLength: uint8(len(key)), offset: r.off, length: uint32(len(r.value)), previous: iprev,
				dataID: ns.curID, timestamp: ts, crc: r.crc,
			}
		}
		i0 := len(ib)
		ib = ib[:i0+indexItemSize+len(key)]
		it.encode(ib[i0:])
		copy(ib[i0+indexItemSize:], key)
		r.idxOff, iprev = uint32(ioff), uint32(ioff)
		ioff += int64(indexItemSize + len(key))
	}
	if _, err := ns.idxW.WriteAt(ib, ns.idxEnd); err != nil {
		return 0, fmt.Errorf("append index records to %s: %w", ns.indexPath(ns.curID), err)
	}

	// in request order, the state the one-request path leaves after each
	ok := 0
	var rerr error
	for j := range reqs {
		r := &reqs[j]
		dlen := int64(dataEntrySize + len(r.id))
		ilen := int64(indexItemSize + len(r.id))
		if !seq {
			dlen = int64(dataEntrySize + len(r.key))
			ilen = int64(indexItemSize + len(r.key))
		}
		dlen += int64(len(r.value))
		ns.store.stats.dataWrite.Add(dlen)
		ns.store.stats.indexWrite.Add(ilen)
		ns.datEnd, ns.datPrev = int64(r.off)+dlen, r.off
		ns.idxEnd, ns.idxPrev = int64(r.idxOff)+ilen, r.idxOff
		ns.indexSize += ilen
		ns.nextEntry++
		e := entry{
			dataID: ns.curID, offset: r.off, length: uint32(len(r.value)), crc: r.crc, ts: ts,
			idxID: ns.curID, idxOff: r.idxOff,
		}
		switch {
		case r.update:
			if err := ns.batchSupersede(r, e); err != nil {
				r.err, rerr = errWriteIndex, fmt.Errorf("rewrite index record of id %d: %w", r.slot, err)
			}
		case seq:
			e.keyLen = 8
			ns.seq = append(ns.seq, e)
			ns.entries++
			ns.dataSize += int64(len(r.value))
		default:
			e.keyLen = uint8(len(r.key))
			ep := new(entry)
			*ep = e
			ns.keys[string(r.key)] = ep
			ns.entries++
			ns.dataSize += int64(len(r.value))
		}
		if rerr != nil {
			k = j + 1
			break
		}
		ok++
	}
	if ok > 0 {
		ns.written = true
		ns.syncAfterWrite()
	}
	return k, rerr
}

// batchSupersede is seqSupersede for an update whose data entry (e, with
// the place of the copy of the old record as idxID/idxOff) and the copy
// are already written: it rewrites the slot in place and updates memory
// exactly as seqSupersede and setSeq do, including on failure.
func (ns *Namespace) batchSupersede(r *setRequest, e entry) error {
	slot := &ns.seq[r.slot]
	cp := *slot
	cp.flags |= flagDeleted
	cp.idxID, cp.idxOff = e.idxID, e.idxOff
	ns.dataSize -= int64(slot.length)
	repl := e
	repl.keyLen = 8
	repl.idxID, repl.idxOff = slot.idxID, slot.idxOff
	repl.parentID, repl.parentOff = cp.idxID, cp.idxOff
	prev := ns.slotPrevious(slot)
	ns.seq = append(ns.seq, cp)
	slot = &ns.seq[r.slot]
	if err := ns.rewriteIndex(&repl, r.id[:], prev); err != nil {
		return err
	}
	*slot = repl
	ns.dataSize += int64(len(r.value))
	return nil
}

// repeatedSlot reports whether one of reqs updates sequential id slot.
func repeatedSlot(reqs []setRequest, slot uint64) bool {
	for i := range reqs {
		if reqs[i].update && reqs[i].slot == slot {
			return true
		}
	}
	return false
}

// repeatedKey reports whether key is one of reqs' keys.
func repeatedKey(reqs []setRequest, key []byte) bool {
	for i := range reqs {
		if bytes.Equal(reqs[i].key, key) {
			return true
		}
	}
	return false
}

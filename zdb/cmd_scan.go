package zdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"time"
)

// Cursor commands: SCAN, SCANX, RSCAN, KEYCUR, HISTORY.

// scanTimeslice bounds the time one SCAN call walks the index
// (SCAN_TIMESLICE_US).
const scanTimeslice = 2 * time.Millisecond

const cursorSize = 17

// cursor is the packed index_bkey_t {u8 idlength, u32 fileid, u32 length,
// u32 idxoffset, u32 crc} naming one index record.
type cursor struct {
	idLength uint8
	fileID   uint32
	length   uint32
	idxOff   uint32
	crc      uint32
}

func (c cursor) encode() []byte {
	b := make([]byte, cursorSize)
	b[0] = c.idLength
	binary.LittleEndian.PutUint32(b[1:], c.fileID)
	binary.LittleEndian.PutUint32(b[5:], c.length)
	binary.LittleEndian.PutUint32(b[9:], c.idxOff)
	binary.LittleEndian.PutUint32(b[13:], c.crc)
	return b
}

func decodeCursor(b []byte) (cursor, bool) {
	if len(b) != cursorSize {
		return cursor{}, false
	}
	return cursor{
		idLength: b[0],
		fileID:   binary.LittleEndian.Uint32(b[1:]),
		length:   binary.LittleEndian.Uint32(b[5:]),
		idxOff:   binary.LittleEndian.Uint32(b[9:]),
		crc:      binary.LittleEndian.Uint32(b[13:]),
	}, true
}

// record is one index record read from disk.
type record struct {
	fileID uint32
	off    uint32
	item   indexItem
	key    []byte
}

func (r *record) cursor() cursor {
	return cursor{idLength: r.item.idLength, fileID: r.fileID, length: r.item.length, idxOff: r.off, crc: r.item.crc}
}

// readRecords parses every complete record of index file id. Caller holds
// mu (shared is enough).
func (ns *Namespace) readRecords(id uint32) ([]record, error) {
	var size int64
	if id == ns.curID {
		size = ns.idxEnd
	} else {
		f, err := ns.file(true, id)
		if err != nil {
			return nil, err
		}
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		size = st.Size()
	}
	f, err := ns.file(true, id)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, size)
	if _, err := f.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	ns.store.stats.indexRead.Add(size)
	var recs []record
	for off := indexHeaderSize; off+indexItemSize <= len(raw); {
		it := decodeIndexItem(raw[off:])
		end := off + indexItemSize + int(it.idLength)
		if end > len(raw) {
			break
		}
		recs = append(recs, record{fileID: id, off: uint32(off), item: it, key: raw[off+indexItemSize : end]})
		off = end
	}
	return recs, nil
}

// readRecord reads the single record a cursor names and checks it matches.
func (ns *Namespace) readRecord(c cursor) (*record, bool) {
	if c.fileID > ns.curID || c.idxOff < indexHeaderSize {
		return nil, false
	}
	f, err := ns.file(true, c.fileID)
	if err != nil {
		return nil, false
	}
	b := make([]byte, indexItemSize+int(c.idLength))
	if _, err := f.ReadAt(b, int64(c.idxOff)); err != nil {
		return nil, false
	}
	it := decodeIndexItem(b)
	if it.idLength != c.idLength || it.length != c.length || it.crc != c.crc {
		return nil, false
	}
	return &record{fileID: c.fileID, off: c.idxOff, item: it, key: b[indexItemSize:]}, true
}

type scanHit struct {
	key    []byte
	length uint32
	ts     uint32
	cur    cursor
}

// scan walks live records forward (or backward) from after cursor start
// (nil = from the beginning or the end) for about one timeslice.
func (ns *Namespace) scan(start *cursor, backward bool) ([]scanHit, error) {
	deadline := time.Now().Add(scanTimeslice)
	if !backward {
		return ns.scanForward(start, deadline)
	}
	fileID := ns.curID
	if start != nil {
		fileID = start.fileID
	}
	var hits []scanHit
	for {
		recs, err := ns.readRecords(fileID)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		i := len(recs) - 1
		if start != nil && start.fileID == fileID {
			i = sort.Search(len(recs), func(k int) bool { return recs[k].off >= start.idxOff }) - 1
			start = nil
		}
		for ; i >= 0; i-- {
			r := &recs[i]
			if r.item.flags&flagDeleted != 0 {
				continue
			}
			hits = append(hits, scanHit{key: append([]byte(nil), r.key...), length: r.item.length, ts: r.item.timestamp, cur: r.cursor()})
			if time.Now().After(deadline) {
				return hits, nil
			}
		}
		if fileID == 0 {
			return hits, nil
		}
		fileID--
	}
}

// scanChunk is how much of an index file a forward scan reads at once.
const scanChunk = 256 << 10

// scanForward reads index files in chunks from the cursor on, so a call
// costs what it returns, not the size of the file.
func (ns *Namespace) scanForward(start *cursor, deadline time.Time) ([]scanHit, error) {
	fileID, pos := uint32(0), int64(indexHeaderSize)
	if start != nil {
		fileID, pos = start.fileID, int64(start.idxOff)+indexItemSize+int64(start.idLength)
	}
	var hits []scanHit
	buf := make([]byte, scanChunk)
	for ; fileID <= ns.curID; fileID, pos = fileID+1, indexHeaderSize {
		f, err := ns.file(true, fileID)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		size := ns.idxEnd
		if fileID != ns.curID {
			st, err := f.Stat()
			if err != nil {
				return nil, err
			}
			size = st.Size()
		}
		for pos < size {
			n := int(min(int64(scanChunk), size-pos))
			if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			ns.store.stats.indexRead.Add(int64(n))
			used := 0
			for used+indexItemSize <= n {
				it := decodeIndexItem(buf[used:])
				end := used + indexItemSize + int(it.idLength)
				if end > n {
					break
				}
				if it.flags&flagDeleted == 0 {
					cur := cursor{idLength: it.idLength, fileID: fileID, length: it.length, idxOff: uint32(pos) + uint32(used), crc: it.crc}
					hits = append(hits, scanHit{key: append([]byte(nil), buf[used+indexItemSize:end]...), length: it.length, ts: it.timestamp, cur: cur})
				}
				used = end
				if len(hits) > 0 && time.Now().After(deadline) {
					return hits, nil
				}
			}
			if used == 0 {
				break // torn tail
			}
			pos += int64(used)
		}
	}
	return hits, nil
}

// scanFrom validates the optional cursor and scans, under the read lock.
func (ns *Namespace) scanFrom(args [][]byte, backward bool) ([]scanHit, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	if ns.removed.Load() {
		return nil, errNSRemoved
	}
	if ns.frozen {
		return nil, errFrozen
	}
	var start *cursor
	if len(args) >= 2 {
		cur, ok := decodeCursor(args[1])
		if ok {
			_, ok = ns.readRecord(cur)
		}
		if !ok {
			return nil, errReply("Invalid key format")
		}
		start = &cur
	}
	return ns.scan(start, backward)
}

func cmdScan(c *session, args [][]byte)  { c.scanCommand(args, false) }
func cmdRScan(c *session, args [][]byte) { c.scanCommand(args, true) }

func (c *session) scanCommand(args [][]byte, backward bool) {
	// like official, arguments after the cursor are ignored
	hits, err := c.ns.scanFrom(args, backward)
	if err != nil {
		c.replyErr(fmt.Errorf("scan %s: %w", c.ns.name, err))
		return
	}
	if len(hits) == 0 {
		c.rw.err("No more data")
		return
	}
	c.rw.array(2)
	c.rw.bulk(hits[len(hits)-1].cur.encode())
	c.rw.array(len(hits))
	for _, h := range hits {
		c.rw.array(3)
		c.rw.bulk(h.key)
		c.rw.integer(int64(h.length))
		c.rw.integer(int64(h.ts))
	}
}

func cmdKeyCur(c *session, args [][]byte) {
	if !c.validate(args, 2, false) {
		return
	}
	kl, ok := c.lookupKey(args[1], payloadNone)
	switch {
	case !ok:
	case !kl.found:
		c.rw.err("Key not found")
	default:
		e := &kl.e
		c.rw.bulk(cursor{idLength: e.keyLen, fileID: e.idxID, length: e.length, idxOff: e.idxOff, crc: e.crc}.encode())
	}
}

// historyKey is the 8-byte {u32 indexid, u32 offset} of a previous version.
func historyKey(id, off uint32) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, id)
	binary.LittleEndian.PutUint32(b[4:], off)
	return b
}

func cmdHistory(c *session, args [][]byte) {
	if len(args) != 2 && len(args) != 3 {
		c.rw.err("Invalid arguments")
		return
	}
	if len(args[1]) > maxKeyLength {
		c.rw.err("Invalid key")
		return
	}
	var hkey []byte
	if len(args) == 3 {
		hkey = args[2]
	}
	ver, payload, err := c.ns.history(args[1], hkey)
	if err != nil {
		c.replyErr(err)
		return
	}
	c.rw.array(3)
	if ver.parentID == 0 && ver.parentOff == 0 {
		c.rw.null()
	} else {
		c.rw.bulk(historyKey(ver.parentID, ver.parentOff))
	}
	c.rw.bulkString(strconv.FormatUint(uint64(ver.ts), 10))
	c.rw.bulk(payload)
}

// history returns the current version of key (hkey nil) or the version
// hkey names, with its payload.
func (ns *Namespace) history(key, hkey []byte) (entry, []byte, error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	if ns.removed.Load() {
		return entry{}, nil, errNSRemoved
	}
	if ns.frozen {
		return entry{}, nil, errFrozen
	}
	var ver entry
	if hkey == nil {
		e := ns.liveLookup(key)
		if e == nil {
			return ver, nil, errKeyNotFound
		}
		ver = *e
	} else {
		// an older version, named by a key HISTORY returned; the key must
		// match the record so crafted offsets are refused
		if len(hkey) != 8 {
			return ver, nil, errReply("Invalid arguments")
		}
		id, off := binary.LittleEndian.Uint32(hkey), binary.LittleEndian.Uint32(hkey[4:])
		if id == 0 && off == 0 {
			return ver, nil, errReply("No more history")
		}
		rec, ok := ns.readRecordAt(id, off, len(key))
		if !ok {
			return ver, nil, errReply("Invalid arguments (index query)")
		}
		if string(rec.key) != string(key) {
			return ver, nil, errReply("Invalid arguments (invalid key)")
		}
		it := rec.item
		ver = entry{dataID: maxU32(it.dataID, id), offset: it.offset, length: it.length, crc: it.crc, ts: it.timestamp,
			idxID: id, idxOff: off, parentID: it.parentID, parentOff: it.parentOff, flags: it.flags, keyLen: it.idLength}
	}
	payload, err := ns.readPayload(&ver, nil)
	if err != nil {
		return ver, nil, errReply("Internal Error")
	}
	return ver, payload, nil
}

// readRecordAt reads the index record at (id, off) with a key of keyLen.
func (ns *Namespace) readRecordAt(id, off uint32, keyLen int) (*record, bool) {
	if id > ns.curID || off < indexHeaderSize {
		return nil, false
	}
	f, err := ns.file(true, id)
	if err != nil {
		return nil, false
	}
	b := make([]byte, indexItemSize+keyLen)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		return nil, false
	}
	it := decodeIndexItem(b)
	if int(it.idLength) != keyLen {
		return nil, false
	}
	return &record{fileID: id, off: off, item: it, key: b[indexItemSize:]}, true
}

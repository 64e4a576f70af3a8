package zdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// entry is the in-memory index record of one key version.
type entry struct {
	dataID    uint32 // data file holding the payload
	offset    uint32 // offset of the data entry header in that file
	length    uint32 // payload length
	crc       uint32
	ts        uint32
	idxID     uint32 // index file holding this record
	idxOff    uint32 // offset of this record in that file
	parentID  uint32
	parentOff uint32
	flags     uint8
	keyLen    uint8
}

func (e *entry) deleted() bool { return e.flags&flagDeleted != 0 }

func (e *entry) item(previous uint32) indexItem {
	return indexItem{
		idLength: e.keyLen, offset: e.offset, length: e.length, previous: previous,
		flags: e.flags, dataID: e.dataID, timestamp: e.ts, crc: e.crc,
		parentID: e.parentID, parentOff: e.parentOff,
	}
}

// Namespace is one 0-db namespace: its descriptor, its index and data
// files, and the in-memory index. Reads take mu shared, writes exclusive;
// every write(2) of an acknowledged change is done before mu is released.
type Namespace struct {
	name   string
	store  *Store
	idxDir string
	datDir string

	mu      sync.RWMutex
	desc    nsDescriptor
	locked  bool
	frozen  bool
	mode    uint8
	removed atomic.Bool

	curID   uint32
	idxW    *os.File
	idxEnd  int64
	idxPrev uint32
	datW    *os.File
	datEnd  int64
	datPrev uint32

	fmu   sync.Mutex // guards files
	files map[fileKey]*os.File

	keys    map[string]*entry // user mode
	seq     []entry           // sequential mode, by id
	seqBase []uint64          // first sequential id of each index file

	entries   int64
	dataSize  int64
	indexSize int64
	nextEntry uint64
	dirty     map[uint32]struct{}
	written   bool // a write since the last rotation

	// replay state while loading (user-key mode)
	replayPrev    entry
	replayHadPrev bool
	repairs       []entry // superseded records still live on disk
	lastJump      time.Time
	lastSync      time.Time
	wbuf          []byte
	bhdr, bidx    []byte   // setBatch scratch: data entry headers, index records
	biov          [][]byte // setBatch scratch: pwritev vector

	stats nsStats
}

type nsStats struct {
	indexIOErrors atomic.Int64
	indexIOLast   atomic.Int64
	indexFaults   atomic.Int64
	dataIOErrors  atomic.Int64
	dataIOLast    atomic.Int64
	dataFaults    atomic.Int64
}

type fileKey struct {
	index bool
	id    uint32
}

func (ns *Namespace) indexPath(id uint32) string {
	return ns.idxDir + "/i" + strconv.FormatUint(uint64(id), 10)
}

func (ns *Namespace) dataPath(id uint32) string {
	return ns.datDir + "/d" + strconv.FormatUint(uint64(id), 10)
}

func (ns *Namespace) descriptorPath() string { return ns.idxDir + "/zdb-namespace" }

// Name returns the namespace name.
func (ns *Namespace) Name() string { return ns.name }

func (ns *Namespace) modeName() string {
	if ns.mode == modeSeq {
		return "sequential"
	}
	return "userkey"
}

// writeDescriptor rewrites zdb-namespace atomically.
func (ns *Namespace) writeDescriptor() error {
	p := ns.descriptorPath()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, ns.desc.encode(), 0o600); err != nil {
		return fmt.Errorf("write namespace descriptor %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("rename namespace descriptor %s: %w", p, err)
	}
	return nil
}

// lookup finds the entry of key (live or deleted) under mu.
func (ns *Namespace) lookup(key []byte) *entry {
	if ns.mode == modeSeq {
		if len(key) != 8 {
			return nil
		}
		id := uint64(binary.LittleEndian.Uint32(key))
		if id >= uint64(len(ns.seq)) {
			return nil
		}
		return &ns.seq[id]
	}
	return ns.keys[string(key)]
}

// liveLookup is lookup restricted to live keys.
func (ns *Namespace) liveLookup(key []byte) *entry {
	e := ns.lookup(key)
	if e == nil || e.deleted() {
		return nil
	}
	return e
}

// errReply is a command failure answered with an error reply.
type errReply string

func (e errReply) Error() string { return string(e) }

const (
	errReadOnly     = errReply("Namespace is in read-only mode")
	errFrozen       = errReply("Namespace is temporarily frozen (read-write disabled)")
	errLocked       = errReply("Namespace is temporarily locked (read-only)")
	errWorm         = errReply("Namespace is protected by worm mode")
	errNoSpace      = errReply("No space left on this namespace")
	errKeyNeeded    = errReply("Invalid argument, key needed")
	errWriteData    = errReply("Cannot write data right now")
	errWriteIndex   = errReply("Cannot write index right now")
	errOnlyUpdate   = errReply("Invalid key, only update authorized")
	errKeyNotFound  = errReply("Key not found")
	errWormDelete   = errReply("Cannot delete a key when namespace is in worm mode")
	errCannotDelete = errReply("Cannot delete key")
	errNSRemoved    = errReply("Your active namespace is not available anymore (probably removed).")
)

// Set stores value under key (user mode) or under a new or existing
// sequential id. It returns the key to reply with (a sequential id is
// written into idBuf), or nil when the value is unchanged.
func (ns *Namespace) Set(key, value []byte, ts uint32, idBuf *[8]byte) ([]byte, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed.Load() {
		return nil, errNSRemoved
	}
	if ns.frozen {
		return nil, errFrozen
	}
	if ns.locked {
		return nil, errLocked
	}
	var existing *entry
	if len(key) > 0 {
		existing = ns.liveLookup(key)
		if ns.mode == modeSeq && existing == nil {
			return nil, errOnlyUpdate
		}
	} else if ns.mode != modeSeq {
		return nil, errKeyNeeded
	}
	crc := crc32c(value)
	if existing != nil {
		if ns.desc.worm {
			return nil, errWorm
		}
		if existing.crc == crc && existing.length == uint32(len(value)) {
			old, err := ns.readPayload(existing, nil)
			if err == nil && bytes.Equal(old, value) {
				return nil, nil
			}
		}
	}
	if ns.desc.maxsize > 0 {
		limit := int64(ns.desc.maxsize)
		if existing != nil {
			limit += int64(existing.length)
		}
		if ns.dataSize+int64(len(value)) > limit {
			return nil, errNoSpace
		}
	}
	if ns.datEnd+int64(len(value)) > int64(ns.store.opts.DataSize) {
		if err := ns.jump(); err != nil {
			ns.store.log.WithField("ns", ns.name).Errorf("rotate files: %v", err)
			return nil, errWriteData
		}
	}
	var err error
	var out []byte
	if ns.mode == modeSeq {
		out, err = ns.setSeq(key, value, crc, ts, existing, idBuf)
	} else {
		out, err = ns.setUser(key, value, crc, ts, existing)
	}
	if err != nil {
		return nil, err
	}
	ns.written = true
	ns.syncAfterWrite()
	return out, nil
}

func (ns *Namespace) setUser(key, value []byte, crc, ts uint32, existing *entry) ([]byte, error) {
	off, err := ns.appendData(key, value, crc, ts, 0)
	if err != nil {
		return nil, errWriteData
	}
	e := entry{dataID: ns.curID, offset: off, length: uint32(len(value)), crc: crc, ts: ts, keyLen: uint8(len(key))}
	if existing != nil {
		e.parentID, e.parentOff = existing.idxID, existing.idxOff
	}
	if err := ns.appendIndex(&e, key); err != nil {
		return nil, errWriteIndex
	}
	if existing != nil {
		// flag the previous version only once the new one is on disk
		if err := ns.flagDeletedOnDisk(existing); err != nil {
			ns.store.log.WithField("ns", ns.name).Errorf("flag previous index entry: %v", err)
		}
		ns.dataSize += int64(len(value)) - int64(existing.length)
		*existing = e
		return key, nil
	}
	ns.keys[string(key)] = &e
	ns.entries++
	ns.dataSize += int64(len(value))
	return key, nil
}

func seqKey(id uint64) []byte {
	k := make([]byte, 8)
	binary.LittleEndian.PutUint64(k, id)
	return k
}

// putSeqKey writes the 8-byte little-endian key of id into b.
func putSeqKey(b *[8]byte, id uint64) []byte {
	binary.LittleEndian.PutUint64(b[:], id)
	return b[:]
}

func (ns *Namespace) setSeq(key, value []byte, crc, ts uint32, existing *entry, idBuf *[8]byte) ([]byte, error) {
	if existing == nil {
		id := ns.nextEntry
		k := putSeqKey(idBuf, id)
		off, err := ns.appendData(k, value, crc, ts, 0)
		if err != nil {
			return nil, errWriteData
		}
		e := entry{dataID: ns.curID, offset: off, length: uint32(len(value)), crc: crc, ts: ts, keyLen: 8}
		if err := ns.appendIndex(&e, k); err != nil {
			return nil, errWriteIndex
		}
		ns.seq = append(ns.seq, e)
		ns.entries++
		ns.dataSize += int64(len(value))
		return k, nil
	}
	id := uint64(binary.LittleEndian.Uint32(key))
	k := putSeqKey(idBuf, id)
	off, err := ns.appendData(k, value, crc, ts, 0)
	if err != nil {
		return nil, errWriteData
	}
	if err := ns.seqSupersede(id, k, entry{dataID: ns.curID, offset: off, length: uint32(len(value)), crc: crc, ts: ts, keyLen: 8}); err != nil {
		return nil, err
	}
	ns.dataSize += int64(len(value))
	return k, nil
}

// seqSupersede replaces slot id: a copy of the old record flagged deleted is
// appended (consuming a sequential id, as official does) and the slot is
// rewritten in place with repl, which points back to the copy.
func (ns *Namespace) seqSupersede(id uint64, k []byte, repl entry) error {
	slot := &ns.seq[id]
	cp := *slot
	cp.flags |= flagDeleted
	if err := ns.appendIndex(&cp, k); err != nil {
		return errWriteIndex
	}
	ns.dataSize -= int64(slot.length)
	repl.idxID, repl.idxOff = slot.idxID, slot.idxOff
	repl.parentID, repl.parentOff = cp.idxID, cp.idxOff
	// keep the slot's own previous pointer
	prev := ns.slotPrevious(slot)
	ns.seq = append(ns.seq, cp)
	slot = &ns.seq[id]
	if err := ns.rewriteIndex(&repl, k, prev); err != nil {
		return errWriteIndex
	}
	*slot = repl
	return nil
}

// slotPrevious returns the previous pointer of a record: the offset of the
// record before it in the same file, or the last record of the file before.
func (ns *Namespace) slotPrevious(e *entry) uint32 {
	f, err := ns.file(true, e.idxID)
	if err != nil {
		return 0
	}
	var b [4]byte
	if _, err := f.ReadAt(b[:], int64(e.idxOff)+9); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b[:])
}

// Del deletes key.
func (ns *Namespace) Del(key []byte, ts uint32) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.removed.Load() {
		return errNSRemoved
	}
	if ns.frozen {
		return errFrozen
	}
	if ns.locked {
		return errLocked
	}
	e := ns.liveLookup(key)
	if e == nil {
		return errKeyNotFound
	}
	if ns.desc.worm {
		return errWormDelete
	}
	var k []byte
	if ns.mode == modeSeq {
		k = seqKey(uint64(binary.LittleEndian.Uint32(key)))
	} else {
		k = key
	}
	if _, err := ns.appendData(k, nil, 0, ts, flagDeleted); err != nil {
		return errCannotDelete
	}
	// the record is flagged deleted in place; in sequential mode the slot
	// stays where it is and no id is consumed (official's own test suite:
	// insert, update, delete, then the next insert gets id 2)
	if err := ns.flagDeletedOnDisk(e); err != nil {
		return errCannotDelete
	}
	e.flags |= flagDeleted
	if ns.mode != modeSeq {
		delete(ns.keys, string(key))
	}
	ns.entries--
	ns.dataSize -= int64(e.length)
	ns.written = true
	ns.syncAfterWrite()
	return nil
}

// flush removes every entry and file of the namespace and starts again at
// i0/d0 (sequential ids restart at 0). Unlike official 2.0.7, whose FLUSH
// only matches v1 file names and deletes nothing, this really empties it.
func (ns *Namespace) flush() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.closeFiles()
	for _, dir := range []struct{ path, prefix string }{{ns.idxDir, "i"}, {ns.datDir, "d"}} {
		ids, err := listFileIDs(dir.path, dir.prefix)
		if err != nil {
			return fmt.Errorf("list files of %s: %w", dir.path, err)
		}
		for _, id := range ids {
			p := filepath.Join(dir.path, dir.prefix+strconv.FormatUint(uint64(id), 10))
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove %s: %w", p, err)
			}
		}
	}
	ns.resetMemory()
	return ns.createFiles(0)
}

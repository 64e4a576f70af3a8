package zdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
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
	lastJump  time.Time
	lastSync  time.Time
	wbuf      []byte

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

// listFileIDs returns the sorted ids of files named <prefix><N> in dir.
func listFileIDs(dir, prefix string) ([]uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		v, err := strconv.ParseUint(n[len(prefix):], 10, 32)
		if err != nil || strconv.FormatUint(v, 10) != n[len(prefix):] {
			continue
		}
		ids = append(ids, uint32(v))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// load (re)builds the namespace from its directories. Caller holds mu
// exclusively or owns ns alone.
func (ns *Namespace) load() error {
	if err := os.MkdirAll(ns.idxDir, 0o700); err != nil {
		return fmt.Errorf("create index directory %s: %w", ns.idxDir, err)
	}
	if err := os.MkdirAll(ns.datDir, 0o700); err != nil {
		return fmt.Errorf("create data directory %s: %w", ns.datDir, err)
	}
	if _, err := os.Stat(filepath.Join(ns.idxDir, "zdb-index-00000")); err == nil {
		return fmt.Errorf("namespace %s: unsupported database detected (0-db v1 files)", ns.name)
	}
	raw, err := os.ReadFile(ns.descriptorPath())
	switch {
	case err == nil:
		d, ok := decodeNSDescriptor(raw)
		if !ok {
			return fmt.Errorf("namespace descriptor %s: truncated", ns.descriptorPath())
		}
		d.name = ns.name
		ns.desc = d
	case errors.Is(err, os.ErrNotExist):
		if err := ns.writeDescriptor(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("read namespace descriptor: %w", err)
	}

	ns.resetMemory()
	ids, err := listFileIDs(ns.idxDir, "i")
	if err != nil {
		return fmt.Errorf("list index files of %s: %w", ns.name, err)
	}
	if len(ids) == 0 {
		return ns.createFiles(0)
	}
	last := ids[len(ids)-1]
	// official numbering is contiguous; a gap means lost files
	for id := uint32(0); id <= last; id++ {
		if err := ns.loadIndexFile(id, id == last); err != nil {
			return err
		}
	}
	return ns.openCurrent(last)
}

func (ns *Namespace) resetMemory() {
	ns.keys = make(map[string]*entry)
	ns.seq = nil
	ns.seqBase = nil
	ns.entries, ns.dataSize, ns.indexSize, ns.nextEntry = 0, 0, 0, 0
	ns.dirty = make(map[uint32]struct{})
	ns.idxPrev, ns.datPrev = 0, 0
	ns.written = false
}

// loadIndexFile replays i<id> into memory. For the last file a torn tail
// (partial entry, or an entry whose payload does not match its CRC) is cut
// off.
func (ns *Namespace) loadIndexFile(id uint32, last bool) error {
	p := ns.indexPath(id)
	raw, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// a missing middle index file: keep ids aligned
			ns.seqBase = append(ns.seqBase, ns.nextEntry)
			return nil
		}
		return fmt.Errorf("read index file %s: %w", p, err)
	}
	if len(raw) < indexHeaderSize || string(raw[:4]) != indexMagic {
		if last && len(raw) < indexHeaderSize {
			// torn creation: rewrite the header
			return os.WriteFile(p, indexHeader(id, ns.mode), 0o600)
		}
		return fmt.Errorf("index file %s: invalid header", p)
	}
	if v := binary.LittleEndian.Uint32(raw[4:]); v != indexVersion {
		return fmt.Errorf("index file %s: unsupported version %d", p, v)
	}
	fmode := raw[28]
	if id == 0 || len(ns.seqBase) == 0 {
		if ns.store.opts.Mode != modeMixed && int(fmode) != ns.store.opts.Mode {
			return fmt.Errorf("namespace %s: index created in another mode (%d), refusing to load", ns.name, fmode)
		}
		ns.mode = fmode
	}
	ns.seqBase = append(ns.seqBase, ns.nextEntry)
	off := indexHeaderSize
	lastStart := -1
	for off < len(raw) {
		if len(raw)-off < indexItemSize {
			break
		}
		it := decodeIndexItem(raw[off:])
		end := off + indexItemSize + int(it.idLength)
		if end > len(raw) {
			break
		}
		key := raw[off+indexItemSize : end]
		ns.replay(id, uint32(off), it, key)
		lastStart = off
		off = end
	}
	if off < len(raw) {
		if !last {
			return fmt.Errorf("index file %s: truncated entry at offset %d", p, off)
		}
		ns.store.log.WithField("ns", ns.name).WithField("file", p).Warnf("dropping torn index tail at offset %d", off)
		if err := os.Truncate(p, int64(off)); err != nil {
			return fmt.Errorf("truncate torn index %s: %w", p, err)
		}
	}
	if last && lastStart >= 0 {
		it := decodeIndexItem(raw[lastStart:])
		if it.flags&flagDeleted == 0 && !ns.payloadIntact(maxU32(it.dataID, id), it) {
			ns.store.log.WithField("ns", ns.name).WithField("file", p).Warnf("dropping last index entry at offset %d: payload torn", lastStart)
			ns.unreplayLast(id, uint32(lastStart), it, raw[lastStart+indexItemSize:lastStart+indexItemSize+int(it.idLength)])
			if err := os.Truncate(p, int64(lastStart)); err != nil {
				return fmt.Errorf("truncate torn index %s: %w", p, err)
			}
			if dp := ns.dataPath(maxU32(it.dataID, id)); fileExists(dp) {
				os.Truncate(dp, int64(it.offset))
			}
			off = lastStart
		}
	}
	if last {
		ns.idxEnd = int64(off)
	}
	return nil
}

func maxU32(a, b uint32) uint32 {
	if a > b {
		return a
	}
	return b
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// payloadIntact reports whether the data entry an index item points to is
// complete and matches its CRC. A missing data file counts as intact (it
// may be offloaded).
func (ns *Namespace) payloadIntact(dataID uint32, it indexItem) bool {
	f, err := os.Open(ns.dataPath(dataID))
	if err != nil {
		return true
	}
	defer f.Close()
	buf := make([]byte, int(it.length))
	if _, err := f.ReadAt(buf, int64(it.offset)+dataEntrySize+int64(it.idLength)); err != nil {
		return false
	}
	return crc32c(buf) == it.crc
}

// replay applies one index record read from disk.
func (ns *Namespace) replay(fileID, off uint32, it indexItem, key []byte) {
	e := entry{
		dataID: maxU32(it.dataID, fileID), offset: it.offset, length: it.length, crc: it.crc,
		ts: it.timestamp, idxID: fileID, idxOff: off, parentID: it.parentID, parentOff: it.parentOff,
		flags: it.flags, keyLen: it.idLength,
	}
	ns.idxPrev = off
	ns.indexSize += int64(indexItemSize) + int64(it.idLength)
	ns.nextEntry++
	if ns.mode == modeSeq {
		ns.seq = append(ns.seq, e)
		if !e.deleted() {
			ns.entries++
			ns.dataSize += int64(e.length)
		}
		return
	}
	if e.deleted() {
		return
	}
	if old, ok := ns.keys[string(key)]; ok {
		ns.dataSize -= int64(old.length)
		*old = e
	} else {
		ne := e
		ns.keys[string(key)] = &ne
		ns.entries++
	}
	ns.dataSize += int64(e.length)
}

// unreplayLast undoes replay of the last record (torn write recovery).
func (ns *Namespace) unreplayLast(fileID, off uint32, it indexItem, key []byte) {
	ns.indexSize -= int64(indexItemSize) + int64(it.idLength)
	ns.nextEntry--
	if ns.mode == modeSeq {
		ns.seq = ns.seq[:len(ns.seq)-1]
		ns.entries--
		ns.dataSize -= int64(it.length)
		return
	}
	if e, ok := ns.keys[string(key)]; ok && e.idxID == fileID && e.idxOff == off {
		delete(ns.keys, string(key))
		ns.entries--
		ns.dataSize -= int64(e.length)
	}
}

// createFiles starts fresh index and data files with id.
func (ns *Namespace) createFiles(id uint32) error {
	ip := ns.indexPath(id)
	if err := os.WriteFile(ip, indexHeader(id, ns.mode), 0o600); err != nil {
		return fmt.Errorf("create index file %s: %w", ip, err)
	}
	dp := ns.dataPath(id)
	if err := os.WriteFile(dp, dataHeader(id), 0o600); err != nil {
		return fmt.Errorf("create data file %s: %w", dp, err)
	}
	ns.seqBase = append(ns.seqBase, ns.nextEntry)
	ns.idxEnd = indexHeaderSize
	ns.lastJump = time.Now()
	return ns.openCurrent(id)
}

// openCurrent opens i<id> and d<id> for writing.
func (ns *Namespace) openCurrent(id uint32) error {
	ns.curID = id
	if ns.lastJump.IsZero() {
		ns.lastJump = time.Now()
	}
	ip := ns.indexPath(id)
	iw, err := os.OpenFile(ip, os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open index file %s: %w", ip, err)
	}
	dp := ns.dataPath(id)
	dw, err := os.OpenFile(dp, os.O_RDWR, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		// the active data file must exist; start an empty one (0-db #121)
		if err = os.WriteFile(dp, dataHeader(id), 0o600); err == nil {
			dw, err = os.OpenFile(dp, os.O_RDWR, 0o600)
		}
	}
	if err != nil {
		iw.Close()
		return fmt.Errorf("open data file %s: %w", dp, err)
	}
	st, err := dw.Stat()
	if err != nil {
		iw.Close()
		dw.Close()
		return fmt.Errorf("stat data file %s: %w", dp, err)
	}
	ns.datEnd = st.Size()
	if ns.datEnd < dataHeaderSize {
		if _, err := dw.WriteAt(dataHeader(id), 0); err != nil {
			return fmt.Errorf("write data header %s: %w", dp, err)
		}
		ns.datEnd = dataHeaderSize
	}
	ns.preallocate(dw)
	if ist, err := iw.Stat(); err == nil && ns.idxEnd < indexHeaderSize {
		ns.idxEnd = ist.Size()
	}
	ns.idxW, ns.datW = iw, dw
	ns.fmu.Lock()
	if ns.files == nil {
		ns.files = make(map[fileKey]*os.File)
	}
	ns.files[fileKey{true, id}] = iw
	ns.files[fileKey{false, id}] = dw
	ns.fmu.Unlock()
	return nil
}

func (ns *Namespace) preallocate(f *os.File) {
	size := int64(ns.store.opts.DataSize)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, size); err != nil {
		ns.store.log.WithField("ns", ns.name).Debugf("preallocate data file: %v", err)
	}
}

// closeFiles closes every open file. Caller holds mu exclusively.
func (ns *Namespace) closeFiles() {
	ns.fmu.Lock()
	for k, f := range ns.files {
		f.Close()
		delete(ns.files, k)
	}
	ns.fmu.Unlock()
	ns.idxW, ns.datW = nil, nil
}

// file returns an open handle of a data or index file. A missing data file
// fires the missing-data hook, and the open is retried once when the hook
// succeeds. Safe under mu held shared.
func (ns *Namespace) file(index bool, id uint32) (*os.File, error) {
	k := fileKey{index, id}
	ns.fmu.Lock()
	f := ns.files[k]
	ns.fmu.Unlock()
	if f != nil {
		return f, nil
	}
	var p string
	flag := os.O_RDONLY
	if index {
		p, flag = ns.indexPath(id), os.O_RDWR
	} else {
		p = ns.dataPath(id)
	}
	f, err := os.OpenFile(p, flag, 0)
	if err != nil && !index && errors.Is(err, os.ErrNotExist) {
		if ns.store.hooks.run("missing-data", true, p) == 0 {
			f, err = os.OpenFile(p, flag, 0)
		}
	}
	if err != nil {
		return nil, err
	}
	ns.fmu.Lock()
	if old := ns.files[k]; old != nil {
		ns.fmu.Unlock()
		f.Close()
		return old, nil
	}
	ns.files[k] = f
	ns.fmu.Unlock()
	return f, nil
}

// readPayload reads the payload of e into dst (resized).
func (ns *Namespace) readPayload(e *entry, dst []byte) ([]byte, error) {
	f, err := ns.file(false, e.dataID)
	if err != nil {
		ns.stats.dataFaults.Add(1)
		return nil, err
	}
	if cap(dst) < int(e.length) {
		dst = make([]byte, e.length)
	}
	dst = dst[:e.length]
	if _, err := f.ReadAt(dst, int64(e.offset)+dataEntrySize+int64(e.keyLen)); err != nil {
		ns.stats.dataIOErrors.Add(1)
		ns.stats.dataIOLast.Store(time.Now().Unix())
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	ns.store.stats.dataRead.Add(int64(e.length))
	return dst, nil
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

// appendData writes one data entry at the end of the current data file and
// returns its offset. Header and key are gathered with the payload in one
// pwritev(2), so the payload is not copied and the entry lands in one call.
func (ns *Namespace) appendData(key, payload []byte, crc, ts uint32, flags uint8) (uint32, error) {
	hn := dataEntrySize + len(key)
	if cap(ns.wbuf) < hn {
		ns.wbuf = make([]byte, dataEntrySize+maxKeyLength)
	}
	h := ns.wbuf[:hn]
	de := dataEntry{idLength: uint8(len(key)), length: uint32(len(payload)), previous: ns.datPrev, crc: crc, flags: flags, timestamp: ts}
	de.encode(h)
	copy(h[dataEntrySize:], key)
	off := ns.datEnd
	n := hn + len(payload)
	if err := pwriteAll(ns.datW, [][]byte{h, payload}, off); err != nil {
		ns.stats.dataIOErrors.Add(1)
		ns.stats.dataIOLast.Store(time.Now().Unix())
		ns.store.stats.dataWriteFailed.Add(1)
		return 0, err
	}
	ns.store.stats.dataWrite.Add(int64(n))
	ns.datEnd += int64(n)
	ns.datPrev = uint32(off)
	return uint32(off), nil
}

// pwriteAll writes bufs at off with pwritev(2), finishing short writes.
func pwriteAll(f *os.File, bufs [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	cerr := rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, err := unix.Pwritev(int(fd), bufs, off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			if n == 0 {
				werr = io.ErrShortWrite
				return true
			}
			off += int64(n)
			for n > 0 && len(bufs) > 0 {
				if n >= len(bufs[0]) {
					n -= len(bufs[0])
					bufs = bufs[1:]
				} else {
					bufs[0] = bufs[0][n:]
					n = 0
				}
			}
			for len(bufs) > 0 && len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
		return true
	})
	if cerr != nil {
		return cerr
	}
	return werr
}

// appendIndex writes one index record at the end of the current index file.
func (ns *Namespace) appendIndex(e *entry, key []byte) error {
	var b [indexItemSize + maxKeyLength]byte
	off := ns.idxEnd
	it := e.item(ns.idxPrev)
	it.idLength = uint8(len(key))
	it.encode(b[:])
	n := copy(b[indexItemSize:], key) + indexItemSize
	if _, err := ns.idxW.WriteAt(b[:n], off); err != nil {
		ns.stats.indexIOErrors.Add(1)
		ns.stats.indexIOLast.Store(time.Now().Unix())
		ns.store.stats.indexWriteFailed.Add(1)
		return err
	}
	ns.store.stats.indexWrite.Add(int64(n))
	e.idxID, e.idxOff = ns.curID, uint32(off)
	ns.idxEnd += int64(n)
	ns.idxPrev = uint32(off)
	ns.indexSize += int64(n)
	ns.nextEntry++
	return nil
}

// rewriteIndex overwrites an existing index record in place (flag change
// or sequential update) and marks its file dirty.
func (ns *Namespace) rewriteIndex(e *entry, key []byte, previous uint32) error {
	f, err := ns.file(true, e.idxID)
	if err != nil {
		return err
	}
	var b [indexItemSize + maxKeyLength]byte
	it := e.item(previous)
	it.encode(b[:])
	n := copy(b[indexItemSize:], key) + indexItemSize
	if _, err := f.WriteAt(b[:n], int64(e.idxOff)); err != nil {
		ns.stats.indexIOErrors.Add(1)
		ns.store.stats.indexWriteFailed.Add(1)
		return err
	}
	ns.store.stats.indexWrite.Add(int64(n))
	ns.dirty[e.idxID] = struct{}{}
	return nil
}

// flagDeletedOnDisk rewrites only the flags byte of a record.
func (ns *Namespace) flagDeletedOnDisk(e *entry) error {
	f, err := ns.file(true, e.idxID)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte{e.flags | flagDeleted}, int64(e.idxOff)+13); err != nil {
		ns.stats.indexIOErrors.Add(1)
		ns.store.stats.indexWriteFailed.Add(1)
		return err
	}
	ns.dirty[e.idxID] = struct{}{}
	return nil
}

// syncAfterWrite applies --sync and --synctime.
func (ns *Namespace) syncAfterWrite() {
	o := &ns.store.opts
	if o.Sync || (o.SyncTime > 0 && time.Since(ns.lastSync) > time.Duration(o.SyncTime)*time.Second) {
		ns.datW.Sync()
		ns.idxW.Sync()
		ns.lastSync = time.Now()
	}
}

func (ns *Namespace) dirtyIDs() []int {
	ids := make([]int, 0, len(ns.dirty))
	for id := range ns.dirty {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	return ids
}

func (ns *Namespace) dirtyList() string {
	ids := ns.dirtyIDs()
	var sb strings.Builder
	for i, id := range ids {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strconv.Itoa(id))
	}
	return sb.String()
}

// jump rotates to the next index and data files and fires jump-index
// (waited for) then jump-data. Caller holds mu exclusively.
func (ns *Namespace) jump() error {
	if ns.store.opts.Secure || ns.store.opts.Sync {
		ns.datW.Sync()
		ns.idxW.Sync()
	}
	oldIdx, oldDat := ns.indexPath(ns.curID), ns.dataPath(ns.curID)
	next := ns.curID + 1
	// keep the handles of the previous files in the cache for reads and
	// in-place rewrites; trim the cache when it grows large
	ns.trimFiles()
	ns.idxEnd = 0
	if err := ns.createFiles(next); err != nil {
		return err
	}
	ns.written = false
	dirty := ns.dirtyList()
	if ns.store.hooks.run("jump-index", true, oldIdx, ns.indexPath(next), dirty) == 0 {
		ns.dirty = make(map[uint32]struct{})
	}
	ns.store.hooks.run("jump-data", false, oldDat, ns.dataPath(next))
	return nil
}

// trimFiles closes cached handles of old files when there are many. Caller
// holds mu exclusively, so no reader uses them.
func (ns *Namespace) trimFiles() {
	ns.fmu.Lock()
	defer ns.fmu.Unlock()
	if len(ns.files) < 64 {
		return
	}
	for k, f := range ns.files {
		if k.id != ns.curID {
			f.Close()
			delete(ns.files, k)
		}
	}
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
// sequential id. It returns the key to reply with, or nil when the value is
// unchanged.
func (ns *Namespace) Set(key, value []byte, ts uint32) ([]byte, error) {
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
		out, err = ns.setSeq(key, value, crc, ts, existing)
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

func (ns *Namespace) setSeq(key, value []byte, crc, ts uint32, existing *entry) ([]byte, error) {
	if existing == nil {
		id := ns.nextEntry
		k := seqKey(id)
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
	k := seqKey(id)
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
	if ns.mode == modeSeq {
		id := uint64(binary.LittleEndian.Uint32(key))
		repl := *e
		repl.flags |= flagDeleted
		repl.ts = ts
		if err := ns.seqSupersede(id, k, repl); err != nil {
			return errCannotDelete
		}
		ns.entries--
	} else {
		if err := ns.flagDeletedOnDisk(e); err != nil {
			return errCannotDelete
		}
		delete(ns.keys, string(key))
		ns.entries--
		ns.dataSize -= int64(e.length)
	}
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

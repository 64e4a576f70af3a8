package zdb

// Loading a namespace from its files, with torn-write recovery.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

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
	if err := ns.openCurrent(last); err != nil {
		return err
	}
	for i := range ns.repairs {
		if err := ns.flagDeletedOnDisk(&ns.repairs[i]); err != nil {
			ns.store.log.WithField("ns", ns.name).Warnf("flag superseded index record: %v", err)
		}
	}
	ns.repairs = nil
	return nil
}

func (ns *Namespace) resetMemory() {
	ns.repairs = nil
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
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// a missing middle index file: keep ids aligned
			ns.seqBase = append(ns.seqBase, ns.nextEntry)
			return nil
		}
		return fmt.Errorf("open index file %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat index file %s: %w", p, err)
	}
	size := st.Size()
	// records are streamed, so loading needs no memory for the file itself
	r := bufio.NewReaderSize(f, 1<<20)
	var hdr [indexHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || string(hdr[:4]) != indexMagic {
		if last && size < indexHeaderSize {
			// torn creation: rewrite the header
			return os.WriteFile(p, indexHeader(id, ns.mode), 0o600)
		}
		return fmt.Errorf("index file %s: invalid header", p)
	}
	if v := binary.LittleEndian.Uint32(hdr[4:]); v != indexVersion {
		return fmt.Errorf("index file %s: unsupported version %d", p, v)
	}
	fmode := hdr[28]
	if id == 0 || len(ns.seqBase) == 0 {
		if ns.store.opts.Mode != modeMixed && int(fmode) != ns.store.opts.Mode {
			return fmt.Errorf("namespace %s: index created in another mode (%d), refusing to load", ns.name, fmode)
		}
		ns.mode = fmode
	}
	ns.seqBase = append(ns.seqBase, ns.nextEntry)
	var (
		off       = int64(indexHeaderSize)
		lastStart = int64(-1)
		lastItem  indexItem
		item      [indexItemSize]byte
		key       [maxKeyLength]byte
		lastKey   []byte
	)
	for off+indexItemSize <= size {
		if _, err := io.ReadFull(r, item[:]); err != nil {
			return fmt.Errorf("read index file %s at %d: %w", p, off, err)
		}
		it := decodeIndexItem(item[:])
		end := off + indexItemSize + int64(it.idLength)
		if end > size {
			break
		}
		k := key[:it.idLength]
		if _, err := io.ReadFull(r, k); err != nil {
			return fmt.Errorf("read index file %s at %d: %w", p, off, err)
		}
		ns.replay(id, uint32(off), it, k)
		lastStart, lastItem = off, it
		if last {
			lastKey = append(lastKey[:0], k...)
		}
		off = end
	}
	if off < size {
		if !last {
			return fmt.Errorf("index file %s: truncated entry at offset %d", p, off)
		}
		ns.store.log.WithField("ns", ns.name).WithField("file", p).Warnf("dropping torn index tail at offset %d", off)
		if err := os.Truncate(p, off); err != nil {
			return fmt.Errorf("truncate torn index %s: %w", p, err)
		}
	}
	if last && lastStart >= 0 {
		it := lastItem
		if it.flags&flagDeleted == 0 && !ns.payloadIntact(maxU32(it.dataID, id), it) {
			ns.store.log.WithField("ns", ns.name).WithField("file", p).Warnf("dropping last index entry at offset %d: payload torn", lastStart)
			ns.unreplayLast(id, uint32(lastStart), it, lastKey)
			if err := os.Truncate(p, lastStart); err != nil {
				return fmt.Errorf("truncate torn index %s: %w", p, err)
			}
			if dp := ns.dataPath(maxU32(it.dataID, id)); fileExists(dp) {
				os.Truncate(dp, int64(it.offset))
			}
			off = lastStart
		}
	}
	if last {
		ns.idxEnd = off
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
	ns.replayHadPrev = false
	if e.deleted() {
		return
	}
	if old, ok := ns.keys[string(key)]; ok {
		// two live records for one key: a crash hit between appending the
		// new record and flagging the old one; flag it once files are open
		ns.replayPrev, ns.replayHadPrev = *old, true
		ns.repairs = append(ns.repairs, *old)
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
		ns.dataSize -= int64(e.length)
		if ns.replayHadPrev {
			// the torn record overwrote a key: its previous version stays
			*e = ns.replayPrev
			ns.dataSize += int64(e.length)
			ns.repairs = ns.repairs[:len(ns.repairs)-1]
			return
		}
		delete(ns.keys, string(key))
		ns.entries--
	}
}

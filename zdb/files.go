package zdb

// Index and data file I/O: creation, the handle cache, appends, in-place
// rewrites and rotation.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

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
		// the active data file is missing: give the missing-data hook a
		// chance to restore it (official does not), else start an empty
		// one as official does (0-db #121)
		if ns.idxEnd > indexHeaderSize && ns.store.hooks.run("missing-data", true, dp) == 0 {
			dw, err = os.OpenFile(dp, os.O_RDWR, 0o600)
		}
		if errors.Is(err, os.ErrNotExist) {
			ns.store.log.WithField("ns", ns.name).Warnf("active data file %s missing, starting an empty one", dp)
			if err = os.WriteFile(dp, dataHeader(id), 0o600); err == nil {
				dw, err = os.OpenFile(dp, os.O_RDWR, 0o600)
			}
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
		forgetReadAhead(f)
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
	return ns.openFile(index, id, true)
}

// openFile is file; hook says whether a missing data file fires the
// missing-data hook (read-ahead of the next file does not).
func (ns *Namespace) openFile(index bool, id uint32, hook bool) (*os.File, error) {
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
	if err != nil && hook && !index && errors.Is(err, os.ErrNotExist) {
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
		ns.store.stats.dataReadFailed.Add(1)
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
			forgetReadAhead(f)
			f.Close()
			delete(ns.files, k)
		}
	}
}

package zdbfs

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdbfs/layout"
	"golang.org/x/sys/unix"
)

// node is the in-memory state of one inode. Its FUSE node id is its meta id.
type node struct {
	mu   sync.Mutex
	ino  uint64
	attr layout.Inode

	// regular and special files
	blocks   []uint32          // data ids per 128 KiB block, 0 = hole
	cache    map[uint32]*block // cached blocks by index
	inflight map[uint32]*fetch // blocks being read from zdb
	lastRead uint64            // end of the last read, for read-ahead

	target []byte   // symlinks
	dir    *dirData // directories

	opens     int         // open file handles (guarded by mu)
	lookups   uint64      // kernel references (guarded by FS.nodesMu)
	reaped    bool        // removed from the backend
	tmpfile   bool        // created by O_TMPFILE and not linked yet
	fresh     atomic.Bool // its inode record is not in zdb yet
	linksAt   time.Time   // last change of the link count
	flushing  int         // block flushes in progress
	flushDone *sync.Cond  // signalled when flushing drops to 0
}

// dirData is a loaded directory: its 128 dirlist buckets.
type dirData struct {
	slots   [layout.DirlistSize]uint64
	buckets [layout.DirlistSize]map[string]uint64
	dirty   [layout.DirlistSize]bool
	parent  uint64
	count   int // entries without . and ..
}

func newDirData() *dirData {
	d := &dirData{}
	for i := range d.buckets {
		d.buckets[i] = map[string]uint64{}
	}
	return d
}

func (d *dirData) lookup(name string) (uint64, bool) {
	ino, ok := d.buckets[layout.Bucket(name)][name]
	return ino, ok
}

func (d *dirData) add(name string, ino uint64) {
	b := layout.Bucket(name)
	if _, ok := d.buckets[b][name]; !ok && name != "." && name != ".." {
		d.count++
	}
	d.buckets[b][name] = ino
	d.dirty[b] = true
}

func (d *dirData) remove(name string) {
	b := layout.Bucket(name)
	if _, ok := d.buckets[b][name]; ok {
		delete(d.buckets[b], name)
		d.dirty[b] = true
		d.count--
	}
}

// setParent rewrites the "." and ".." entries; 0-db-fs stores the parent's
// id in both.
func (d *dirData) setParent(p uint64) {
	d.parent = p
	d.buckets[layout.Bucket(".")]["."] = p
	d.buckets[layout.Bucket("..")][".."] = p
	d.dirty[layout.Bucket(".")] = true
	d.dirty[layout.Bucket("..")] = true
}

// entries returns the bucket's entries for encoding.
func (d *dirData) entries(b int) []layout.DirEntry {
	out := make([]layout.DirEntry, 0, len(d.buckets[b]))
	for name, ino := range d.buckets[b] {
		out = append(out, layout.DirEntry{Name: name, Ino: ino})
	}
	return out
}

func (n *node) isDir() bool { return n.attr.IsDir() }
func (n *node) isReg() bool { return n.attr.Mode&layout.ModeType == layout.ModeReg }

// encode returns the inode record; n.mu must be held.
func (n *node) encode() []byte {
	switch {
	case n.isDir():
		return layout.EncodeDir(&n.attr, &n.dir.slots)
	case n.attr.IsLink():
		return layout.EncodeSymlink(&n.attr, n.target)
	default:
		return layout.EncodeFile(&n.attr, n.blocks)
	}
}

// fill writes the node's attributes; n.mu must be held.
func (n *node) fill(a *fuse.Attr) {
	a.Ino = n.ino
	a.Mode = n.attr.Mode
	a.Nlink = n.attr.Links
	a.Size = n.attr.Size
	if n.attr.IsLink() {
		a.Size = uint64(len(n.target))
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = layout.BlockSize
	a.Atime = uint64(n.attr.Atime)
	a.Mtime = uint64(n.attr.Mtime)
	a.Ctime = uint64(n.attr.Ctime)
	a.Owner = fuse.Owner{Uid: uint32(n.attr.UID), Gid: uint32(n.attr.GID)}
	if n.attr.Mode&syscall.S_IFMT == syscall.S_IFCHR || n.attr.Mode&syscall.S_IFMT == syscall.S_IFBLK {
		a.Rdev = n.attr.Dev
	}
}

// now returns the current time as stored in an inode, from the clock the
// kernel stamps inodes with (the coarse one): with the one-second time_gran
// of a direct mount, a file the kernel writes in the second zdbfs created it
// then keeps its times and costs no SETATTR at close, also in the few
// milliseconds by which the coarse clock lags at the start of a second.
func now() uint32 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts) != nil {
		return uint32(time.Now().Unix())
	}
	return uint32(ts.Sec)
}

// checkTime validates a timestamp for the u32 fields of the layout.
func checkTime(sec uint64) (uint32, syscall.Errno) {
	if int64(sec) < 0 {
		return 0, syscall.EINVAL
	}
	if sec > 0xffffffff {
		return 0, syscall.EOVERFLOW
	}
	return uint32(sec), 0
}

// checkID validates a uid or gid for the u16 fields of the layout.
func checkID(id uint32) (uint16, syscall.Errno) {
	if id > 0xffff {
		return 0, syscall.EOVERFLOW
	}
	return uint16(id), 0
}

// loadNode reads an inode, and for a directory its dirlists, from zdb.
func (fs *FS) loadNode(ino uint64) (*node, error) {
	v, err := fs.b.meta.getOne(ino)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, fmt.Errorf("inode %d: %w", ino, syscall.ENOENT)
	}
	rec, err := layout.DecodeRecord(v)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	n := &node{ino: ino, attr: rec.Inode}
	n.attr.Ino = 0
	switch {
	case rec.IsDir():
		n.dir = newDirData()
		n.dir.slots = rec.Dirlist
		var ids []uint64
		var idx []int
		for i, id := range rec.Dirlist {
			if id != 0 {
				ids = append(ids, id)
				idx = append(idx, i)
			}
		}
		vals, err := fs.b.meta.getMany(ids)
		if err != nil {
			return nil, err
		}
		for k, val := range vals {
			if val == nil {
				fs.log.WithField("ino", ino).Warnf("dirlist id %d is missing", ids[k])
				n.dir.slots[idx[k]] = 0
				continue
			}
			ents, err := layout.DecodeDirlist(val)
			if err != nil {
				fs.log.WithField("ino", ino).Warnf("dirlist id %d: %v", ids[k], err)
			}
			for _, e := range ents {
				n.dir.buckets[idx[k]][e.Name] = e.Ino
				if e.Name == ".." {
					n.dir.parent = e.Ino
				} else if e.Name != "." {
					n.dir.count++
				}
			}
		}
		if n.attr.Links < 2 {
			// 0-db-fs stores 0: count the subdirectories
			if err := fs.countLinks(n); err != nil {
				return nil, err
			}
		}
	case rec.IsLink():
		n.target = rec.Target
	default:
		n.blocks = rec.Blocks
	}
	return n, nil
}

func (fs *FS) countLinks(n *node) error {
	var ids []uint64
	for _, b := range n.dir.buckets {
		for name, ino := range b {
			if name != "." && name != ".." {
				ids = append(ids, ino)
			}
		}
	}
	vals, err := fs.b.meta.getMany(ids)
	if err != nil {
		return err
	}
	links := uint32(2)
	for _, v := range vals {
		if rec, err := layout.DecodeRecord(v); err == nil && rec.IsDir() {
			links++
		}
	}
	n.attr.Links = links
	return nil
}

// node returns the node for ino, loading it when needed.
func (fs *FS) node(ino uint64) (*node, syscall.Errno) {
	fs.nodesMu.Lock()
	n := fs.nodes[ino]
	fs.nodesMu.Unlock()
	if n != nil {
		return n, 0
	}
	n, err := fs.loadNode(ino)
	if err != nil {
		fs.log.WithField("ino", ino).Debugf("load: %v", err)
		return nil, errno(err)
	}
	fs.nodesMu.Lock()
	defer fs.nodesMu.Unlock()
	if cur := fs.nodes[ino]; cur != nil {
		return cur, 0
	}
	fs.nodes[ino] = n
	return n, 0
}

// preload loads the given inodes in one pipeline (readdir).
func (fs *FS) preload(inos []uint64) {
	var missing []uint64
	fs.nodesMu.Lock()
	for _, ino := range inos {
		if fs.nodes[ino] == nil {
			missing = append(missing, ino)
		}
	}
	fs.nodesMu.Unlock()
	if len(missing) == 0 {
		return
	}
	vals, err := fs.b.meta.getMany(missing)
	if err != nil {
		return
	}
	for k, v := range vals {
		if v == nil {
			continue
		}
		rec, err := layout.DecodeRecord(v)
		if err != nil || rec.IsDir() {
			continue // directories load their dirlists on first use
		}
		n := &node{ino: missing[k], attr: rec.Inode, blocks: rec.Blocks, target: rec.Target}
		n.attr.Ino = 0
		fs.nodesMu.Lock()
		if fs.nodes[n.ino] == nil {
			fs.nodes[n.ino] = n
		}
		fs.nodesMu.Unlock()
	}
}

// addLookup counts a kernel reference to n. A node forgotten between the
// caller's fs.node and this call goes back into the table (it was clean
// and nothing referenced it), or the reference goes to the copy loaded
// since.
func (fs *FS) addLookup(n *node) {
	fs.nodesMu.Lock()
	switch cur := fs.nodes[n.ino]; {
	case cur == nil:
		fs.nodes[n.ino] = n
		n.lookups++
	case cur != n:
		cur.lookups++
	default:
		n.lookups++
	}
	fs.nodesMu.Unlock()
}

// allocIno returns a fresh meta id. Ids are reserved in batches with an "X"
// placeholder, as 0-db-fs reserves the root's id, so that creating a file
// costs no round trip; the inode is written by the next flush, before any
// dirlist that names it.
func (fs *FS) allocIno() (uint64, error) {
	fs.idMu.Lock()
	defer fs.idMu.Unlock()
	if len(fs.freeIDs) == 0 {
		batch := make([][]byte, 64)
		for i := range batch {
			batch[i] = []byte("X")
		}
		ids, err := fs.b.meta.insertMany(batch)
		if err != nil {
			return 0, err
		}
		fs.freeIDs = ids
	}
	id := fs.freeIDs[0]
	fs.freeIDs = fs.freeIDs[1:]
	return id, nil
}

// markMeta queues the inode record of n for the next flush.
func (fs *FS) markMeta(n *node) {
	fs.dirtyMu.Lock()
	fs.dirtyMeta[n] = struct{}{}
	fs.dirtyMu.Unlock()
}

// markDir queues the dirty dirlists of n for the next flush.
func (fs *FS) markDir(n *node) {
	fs.dirtyMu.Lock()
	fs.dirtyDirs[n] = struct{}{}
	fs.dirtyMeta[n] = struct{}{}
	fs.dirtyMu.Unlock()
}

// maybeReap deletes an inode that has no name, no open handle and no kernel
// reference. The deletes run in the next flush, after the dirlists. An
// inode that still has a name is forgotten instead when clean.
func (fs *FS) maybeReap(n *node) {
	n.mu.Lock()
	fs.nodesMu.Lock()
	lookups := n.lookups
	fs.nodesMu.Unlock()
	if n.reaped || n.opens > 0 || lookups > 0 {
		n.mu.Unlock()
		return
	}
	if n.attr.Links > 0 {
		n.mu.Unlock()
		fs.forgetClean(n)
		return
	}
	n.reaped = true
	var data []uint64
	for _, id := range n.blocks {
		if id != 0 {
			data = append(data, uint64(id))
		}
	}
	meta := []uint64{n.ino}
	if n.dir != nil {
		for _, id := range n.dir.slots {
			if id != 0 {
				meta = append(meta, id)
			}
		}
	}
	fs.dropBlocks(n, 0)
	n.blocks = nil
	n.mu.Unlock()

	fs.dirtyMu.Lock()
	delete(fs.dirtyMeta, n)
	delete(fs.dirtyDirs, n)
	delete(fs.dirtyData, n)
	fs.delMeta = append(fs.delMeta, meta...)
	fs.delData = append(fs.delData, data...)
	fs.dirtyMu.Unlock()

	fs.nodesMu.Lock()
	if fs.nodes[n.ino] == n {
		delete(fs.nodes, n.ino)
	}
	fs.nodesMu.Unlock()
}

// forgetClean drops from memory a node the kernel no longer references,
// with no open handle, nothing to write back and nothing in flight, and
// its cached blocks (all clean): the next use loads it again from zdb
// (loadNode). While a write-back runs (a node being written is not in the
// dirty sets but not in zdb yet either) or the node is dirty, it is kept
// in fs.unforgotten, which the next sweep (after the next write-back)
// tries again.
func (fs *FS) forgetClean(n *node) {
	if n.ino == rootIno {
		return
	}
	if !fs.flushMu.TryLock() {
		fs.deferForget(n)
		return
	}
	defer fs.flushMu.Unlock()
	fs.dropIfClean(n)
}

// dropIfClean is forgetClean with fs.flushMu held.
func (fs *FS) dropIfClean(n *node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reaped || n.tmpfile || n.attr.Links == 0 || n.opens > 0 {
		return // reaped, or released at its last close
	}
	fs.dirtyMu.Lock()
	_, d1 := fs.dirtyMeta[n]
	_, d2 := fs.dirtyDirs[n]
	_, d3 := fs.dirtyData[n]
	fs.dirtyMu.Unlock()
	if d1 || d2 || d3 || n.flushing > 0 || len(n.inflight) > 0 || n.fresh.Load() {
		fs.deferForget(n)
		return
	}
	fs.nodesMu.Lock()
	gone := n.lookups == 0 && fs.nodes[n.ino] == n
	if gone {
		delete(fs.nodes, n.ino)
		delete(fs.unforgotten, n)
	}
	fs.nodesMu.Unlock()
	if gone {
		fs.dropBlocks(n, 0)
	}
}

// deferForget keeps n for the next sweep.
func (fs *FS) deferForget(n *node) {
	fs.nodesMu.Lock()
	if fs.unforgotten == nil {
		fs.unforgotten = map[*node]struct{}{}
	}
	fs.unforgotten[n] = struct{}{}
	fs.nodesMu.Unlock()
}

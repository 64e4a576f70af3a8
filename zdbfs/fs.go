package zdbfs

import (
	"container/list"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdbfs/layout"
	"github.com/sirupsen/logrus"
)

// Kernel cache lifetimes. zdbfs is the only writer of its namespaces, so
// the kernel may cache names, negative lookups and attributes.
const (
	entryTimeout = 5 * time.Second
	attrTimeout  = 5 * time.Second
	maxName      = 255
	maxSymlink   = 4095
)

// FS is the FUSE filesystem. It implements go-fuse's raw API with node ids
// equal to meta-namespace ids.
type FS struct {
	fuse.RawFileSystem
	opts   *Options
	b      *backends
	size   uint64
	log    *logrus.Entry
	server *fuse.Server

	nodesMu sync.Mutex
	nodes   map[uint64]*node

	treeMu sync.Mutex // serializes changes to names

	dirtyMu   sync.Mutex
	dirtyMeta map[*node]struct{}
	dirtyDirs map[*node]struct{}
	dirtyData map[*node]struct{}
	delMeta   []uint64
	delData   []uint64

	flushMu sync.Mutex // one write-back cycle at a time
	dataMu  sync.Mutex // one data flush at a time

	idMu    sync.Mutex
	freeIDs []uint64

	cacheMu    sync.Mutex
	lru        *list.List
	cacheBytes int64
	dirtyBytes int64
	wbBusy     int64 // write-behind workers at work
	budget     int64
	wb         chan wbJob

	dirsMu  sync.Mutex
	dirs    map[uint64]*dirHandle
	nextDir uint64

	stats stats
}

var _ fuse.RawFileSystem = (*FS)(nil)

// dirHandle is an open directory: a snapshot of its names taken at offset 0.
type dirHandle struct {
	mu    sync.Mutex
	names []string
	inos  []uint64
}

func newFS(o *Options, b *backends, size uint64, log *logrus.Entry) *FS {
	fs := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		opts:          o, b: b, size: size, log: log,
		nodes:     map[uint64]*node{},
		dirtyMeta: map[*node]struct{}{},
		dirtyDirs: map[*node]struct{}{},
		dirtyData: map[*node]struct{}{},
		lru:       list.New(),
		budget:    int64(o.CacheSize) * blockSize,
		wb:        make(chan wbJob, 256),
		dirs:      map[uint64]*dirHandle{},
	}
	for i := 0; i < 4; i++ {
		go fs.writeBehind()
	}
	return fs
}

func (fs *FS) String() string { return "zdbfs" }

// Init keeps the server for notifications.
func (fs *FS) Init(s *fuse.Server) { fs.server = s }

func st(e syscall.Errno) fuse.Status {
	if e == 0 {
		return fuse.OK
	}
	return fuse.Status(e)
}

func (fs *FS) fillEntry(n *node, out *fuse.EntryOut) {
	out.NodeId = n.ino
	out.Generation = 0
	out.SetEntryTimeout(entryTimeout)
	out.SetAttrTimeout(attrTimeout)
	n.fill(&out.Attr)
}

// dirNode returns a loaded directory node.
func (fs *FS) dirNode(ino uint64) (*node, syscall.Errno) {
	n, e := fs.node(ino)
	if e != 0 {
		return nil, e
	}
	if !n.isDir() {
		return nil, syscall.ENOTDIR
	}
	return n, 0
}

// Lookup finds name in a directory.
func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	fs.count(&fs.stats.getattr)
	if len(name) > maxName {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	p, e := fs.dirNode(h.NodeId)
	if e != 0 {
		return st(e)
	}
	p.mu.Lock()
	ino, ok := p.dir.lookup(name)
	if name == ".." {
		ino, ok = p.dir.parent, p.dir.parent != 0
	} else if name == "." {
		ino, ok = p.ino, true
	}
	p.mu.Unlock()
	if !ok {
		out.NodeId = 0
		out.SetEntryTimeout(entryTimeout)
		return fuse.OK // a negative entry the kernel may cache
	}
	n, e := fs.node(ino)
	if e != 0 {
		return st(e)
	}
	n.mu.Lock()
	fs.fillEntry(n, out)
	n.mu.Unlock()
	fs.addLookup(n)
	return fuse.OK
}

// Forget drops kernel references.
func (fs *FS) Forget(nodeid, nlookup uint64) {
	fs.nodesMu.Lock()
	n := fs.nodes[nodeid]
	if n == nil {
		fs.nodesMu.Unlock()
		return
	}
	n.lookups -= min(n.lookups, nlookup)
	zero := n.lookups == 0
	fs.nodesMu.Unlock()
	if zero {
		fs.maybeReap(n)
	}
}

// GetAttr returns attributes.
func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	fs.count(&fs.stats.getattr)
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return st(e)
	}
	n.mu.Lock()
	n.fill(&out.Attr)
	n.mu.Unlock()
	out.SetTimeout(attrTimeout)
	return fuse.OK
}

// SetAttr changes mode, owner, size and times.
func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	fs.count(&fs.stats.setattr)
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return st(e)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	a := n.attr
	t := now()
	if in.Valid&fuse.FATTR_UID != 0 {
		if a.UID, e = checkID(in.Uid); e != 0 {
			return st(e)
		}
		a.Ctime = t
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		if a.GID, e = checkID(in.Gid); e != 0 {
			return st(e)
		}
		a.Ctime = t
	}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			a.Atime = t
		} else if a.Atime, e = checkTime(in.Atime); e != 0 {
			return st(e)
		}
		a.Ctime = t
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			a.Mtime = t
		} else if a.Mtime, e = checkTime(in.Mtime); e != 0 {
			return st(e)
		}
		a.Ctime = t
	}
	if in.Valid&fuse.FATTR_CTIME != 0 {
		if a.Ctime, e = checkTime(in.Ctime); e != 0 {
			return st(e)
		}
	}
	if in.Valid&fuse.FATTR_MODE != 0 {
		a.Mode = a.Mode&syscall.S_IFMT | in.Mode&^uint32(syscall.S_IFMT)
		a.Ctime = t
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		if n.isDir() {
			return fuse.Status(syscall.EISDIR)
		}
		if !n.isReg() {
			return fuse.EINVAL
		}
		sizeAttr := a
		n.attr = sizeAttr
		if e := fs.truncate(n, in.Size); e != 0 {
			return st(e)
		}
		a.Size = n.attr.Size
		if in.Valid&fuse.FATTR_MTIME == 0 {
			a.Mtime = t
		}
		a.Ctime = t
	}
	n.attr = a
	fs.markMeta(n)
	n.fill(&out.Attr)
	out.SetTimeout(attrTimeout)
	return fuse.OK
}

// newChild creates an inode and names it in a directory.
func (fs *FS) newChild(h *fuse.InHeader, name string, mode, rdev uint32, target []byte, out *fuse.EntryOut) (*node, syscall.Errno) {
	if len(name) > maxName {
		return nil, syscall.ENAMETOOLONG
	}
	uid, e := checkID(h.Uid)
	if e != 0 {
		return nil, e
	}
	gid, e := checkID(h.Gid)
	if e != 0 {
		return nil, e
	}
	p, e := fs.dirNode(h.NodeId)
	if e != 0 {
		return nil, e
	}
	fs.treeMu.Lock()
	defer fs.treeMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attr.Links == 0 {
		return nil, syscall.ENOENT
	}
	if _, ok := p.dir.lookup(name); ok || name == "." || name == ".." {
		return nil, syscall.EEXIST
	}
	isDir := mode&syscall.S_IFMT == syscall.S_IFDIR
	if p.attr.Mode&syscall.S_ISGID != 0 {
		gid = p.attr.GID
		if isDir {
			mode |= syscall.S_ISGID
		}
	}
	ino, err := fs.allocIno()
	if err != nil {
		return nil, errno(err)
	}
	t := now()
	n := &node{ino: ino, attr: layout.Inode{Mode: mode, Dev: rdev, UID: uid, GID: gid, Links: 1, Atime: t, Mtime: t, Ctime: t}}
	switch {
	case isDir:
		n.attr.Links = 2
		n.dir = newDirData()
		n.dir.setParent(p.ino)
		p.attr.Links++
	case target != nil:
		n.target = target
		n.attr.Size = uint64(len(target)) + 1
	default:
		n.cache = map[uint32]*block{}
	}
	p.dir.add(name, ino)
	p.attr.Size += layout.EntrySize(name)
	p.attr.Mtime, p.attr.Ctime = t, t
	n.lookups = 1
	fs.nodesMu.Lock()
	fs.nodes[ino] = n
	fs.nodesMu.Unlock()
	fs.markMeta(n)
	if isDir {
		fs.markDir(n)
	}
	fs.markDir(p)
	fs.fillEntry(n, out)
	return n, 0
}

// Mknod creates regular files, devices, FIFOs and sockets.
func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	fs.count(&fs.stats.create)
	switch in.Mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		return fuse.EINVAL
	}
	_, e := fs.newChild(&in.InHeader, name, in.Mode, in.Rdev, nil, out)
	return st(e)
}

// Mkdir creates a directory.
func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	fs.count(&fs.stats.mkdir)
	_, e := fs.newChild(&in.InHeader, name, syscall.S_IFDIR|in.Mode&07777, 0, nil, out)
	return st(e)
}

// Symlink creates a symbolic link.
func (fs *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	fs.count(&fs.stats.symlink)
	if len(target) > maxSymlink {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	_, e := fs.newChild(h, name, syscall.S_IFLNK|0o777, 0, []byte(target), out)
	return st(e)
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n, e := fs.node(h.NodeId)
	if e != 0 {
		return nil, st(e)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.attr.IsLink() {
		return nil, fuse.EINVAL
	}
	return append([]byte(nil), n.target...), fuse.OK
}

// Create creates and opens a regular file.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	fs.count(&fs.stats.create)
	n, e := fs.newChild(&in.InHeader, name, syscall.S_IFREG|in.Mode&07777, 0, nil, &out.EntryOut)
	if e != 0 {
		return st(e)
	}
	n.mu.Lock()
	n.opens++
	n.mu.Unlock()
	out.Fh = n.ino
	out.OpenFlags = fs.openFlags()
	return fuse.OK
}

// Tmpfile creates an unnamed regular file (O_TMPFILE); linkat(2) may name it.
func (fs *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	fs.count(&fs.stats.create)
	uid, e := checkID(in.Uid)
	if e != 0 {
		return st(e)
	}
	gid, e := checkID(in.Gid)
	if e != 0 {
		return st(e)
	}
	if _, e := fs.dirNode(in.NodeId); e != 0 {
		return st(e)
	}
	ino, err := fs.allocIno()
	if err != nil {
		return st(errno(err))
	}
	t := now()
	n := &node{ino: ino, tmpfile: true, opens: 1, lookups: 1, cache: map[uint32]*block{},
		attr: layout.Inode{Mode: syscall.S_IFREG | in.Mode&07777, UID: uid, GID: gid, Atime: t, Mtime: t, Ctime: t}}
	fs.nodesMu.Lock()
	fs.nodes[ino] = n
	fs.nodesMu.Unlock()
	fs.markMeta(n)
	fs.fillEntry(n, &out.EntryOut)
	out.Fh = ino
	out.OpenFlags = fs.openFlags()
	return fuse.OK
}

func (fs *FS) openFlags() uint32 {
	if fs.opts.NoCache {
		return 0
	}
	return fuse.FOPEN_KEEP_CACHE
}

// Link adds a name to an inode.
func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	fs.count(&fs.stats.link)
	if len(name) > maxName {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	n, e := fs.node(in.Oldnodeid)
	if e != 0 {
		return st(e)
	}
	if n.isDir() {
		return fuse.EPERM
	}
	p, e := fs.dirNode(in.NodeId)
	if e != 0 {
		return st(e)
	}
	fs.treeMu.Lock()
	defer fs.treeMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.dir.lookup(name); ok {
		return fuse.Status(syscall.EEXIST)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reaped || (n.attr.Links == 0 && !n.tmpfile) {
		return fuse.ENOENT
	}
	n.tmpfile = false
	if n.attr.Links == 0xffffffff {
		return fuse.Status(syscall.EMLINK)
	}
	t := now()
	n.attr.Links++
	n.attr.Ctime = t
	p.dir.add(name, n.ino)
	p.attr.Size += layout.EntrySize(name)
	p.attr.Mtime, p.attr.Ctime = t, t
	fs.markMeta(n)
	fs.markDir(p)
	fs.fillEntry(n, out)
	fs.addLookup(n)
	return fuse.OK
}

// removeName takes name out of p; the caller holds treeMu and p.mu.
func (fs *FS) removeName(p *node, name string, t uint32) {
	p.dir.remove(name)
	p.attr.Size -= min(p.attr.Size, layout.EntrySize(name))
	p.attr.Mtime, p.attr.Ctime = t, t
	fs.markDir(p)
}

func (fs *FS) unlinkChild(h *fuse.InHeader, name string, wantDir bool) syscall.Errno {
	if len(name) > maxName {
		return syscall.ENAMETOOLONG
	}
	p, e := fs.dirNode(h.NodeId)
	if e != 0 {
		return e
	}
	fs.treeMu.Lock()
	p.mu.Lock()
	ino, ok := p.dir.lookup(name)
	if !ok || name == "." || name == ".." {
		p.mu.Unlock()
		fs.treeMu.Unlock()
		if name == "." {
			return syscall.EINVAL
		}
		if name == ".." {
			return syscall.ENOTEMPTY
		}
		return syscall.ENOENT
	}
	n, e := fs.node(ino)
	if e != 0 {
		p.mu.Unlock()
		fs.treeMu.Unlock()
		return e
	}
	n.mu.Lock()
	switch {
	case wantDir && !n.isDir():
		e = syscall.ENOTDIR
	case !wantDir && n.isDir():
		e = syscall.EISDIR
	case wantDir && n.dir.count > 0:
		e = syscall.ENOTEMPTY
	}
	if e == 0 {
		t := now()
		fs.removeName(p, name, t)
		if wantDir {
			n.attr.Links = 0
			p.attr.Links = max(p.attr.Links-1, 2)
		} else if n.attr.Links > 0 {
			n.attr.Links--
		}
		n.attr.Ctime = t
		fs.markMeta(n)
	}
	n.mu.Unlock()
	p.mu.Unlock()
	fs.treeMu.Unlock()
	if e == 0 {
		fs.maybeReap(n)
	}
	return e
}

// Unlink removes a non-directory name.
func (fs *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	fs.count(&fs.stats.unlink)
	return st(fs.unlinkChild(h, name, false))
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	fs.count(&fs.stats.rmdir)
	return st(fs.unlinkChild(h, name, true))
}

// Rename moves a name, replacing an existing target as POSIX says.
func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	fs.count(&fs.stats.rename)
	if len(oldName) > maxName || len(newName) > maxName {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	const noReplace, exchange = 1, 2
	if in.Flags&^uint32(noReplace|exchange) != 0 || in.Flags == noReplace|exchange {
		return fuse.EINVAL
	}
	p1, e := fs.dirNode(in.NodeId)
	if e != 0 {
		return st(e)
	}
	p2, e := fs.dirNode(in.Newdir)
	if e != 0 {
		return st(e)
	}
	fs.treeMu.Lock()
	defer fs.treeMu.Unlock()
	p1.mu.Lock()
	defer p1.mu.Unlock()
	if p2 != p1 {
		p2.mu.Lock()
		defer p2.mu.Unlock()
	}
	srcIno, ok := p1.dir.lookup(oldName)
	if !ok || oldName == "." || oldName == ".." {
		return fuse.ENOENT
	}
	if newName == "." || newName == ".." {
		return fuse.EINVAL
	}
	dstIno, exists := p2.dir.lookup(newName)
	if in.Flags&noReplace != 0 && exists {
		return fuse.Status(syscall.EEXIST)
	}
	if in.Flags&exchange != 0 && !exists {
		return fuse.ENOENT
	}
	if exists && dstIno == srcIno {
		return fuse.OK
	}
	src, e := fs.node(srcIno)
	if e != 0 {
		return st(e)
	}
	var dst *node
	if exists {
		if dst, e = fs.node(dstIno); e != 0 {
			return st(e)
		}
	}
	t := now()
	if in.Flags&exchange != 0 {
		return st(fs.exchange(p1, p2, oldName, newName, src, dst, t))
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if dst != nil {
		dst.mu.Lock()
		switch {
		case src.isDir() && !dst.isDir():
			e = syscall.ENOTDIR
		case !src.isDir() && dst.isDir():
			e = syscall.EISDIR
		case dst.isDir() && dst.dir.count > 0:
			e = syscall.ENOTEMPTY
		}
		if e != 0 {
			dst.mu.Unlock()
			return st(e)
		}
		fs.removeName(p2, newName, t)
		if dst.isDir() {
			dst.attr.Links = 0
			p2.attr.Links = max(p2.attr.Links-1, 2)
		} else if dst.attr.Links > 0 {
			dst.attr.Links--
		}
		dst.attr.Ctime = t
		fs.markMeta(dst)
		dst.mu.Unlock()
		defer fs.maybeReapLater(dst)
	}
	fs.removeName(p1, oldName, t)
	p2.dir.add(newName, srcIno)
	p2.attr.Size += layout.EntrySize(newName)
	p2.attr.Mtime, p2.attr.Ctime = t, t
	fs.markDir(p2)
	if src.isDir() && p1 != p2 {
		p1.attr.Links = max(p1.attr.Links-1, 2)
		p2.attr.Links++
		src.dir.setParent(p2.ino)
		fs.markDir(src)
	}
	src.attr.Ctime = t
	fs.markMeta(src)
	return fuse.OK
}

// maybeReapLater runs maybeReap once the caller's locks are released.
func (fs *FS) maybeReapLater(n *node) { go fs.maybeReap(n) }

// exchange swaps two names (RENAME_EXCHANGE); the caller holds treeMu and
// the parents' locks.
func (fs *FS) exchange(p1, p2 *node, oldName, newName string, src, dst *node, t uint32) syscall.Errno {
	p1.dir.add(oldName, dst.ino)
	p2.dir.add(newName, src.ino)
	p1.attr.Mtime, p1.attr.Ctime = t, t
	p2.attr.Mtime, p2.attr.Ctime = t, t
	fs.markDir(p1)
	fs.markDir(p2)
	for _, x := range []struct {
		n    *node
		from *node
		to   *node
	}{{src, p1, p2}, {dst, p2, p1}} {
		x.n.mu.Lock()
		x.n.attr.Ctime = t
		if x.n.isDir() && p1 != p2 {
			x.from.attr.Links = max(x.from.attr.Links-1, 2)
			x.to.attr.Links++
			x.n.dir.setParent(x.to.ino)
			fs.markDir(x.n)
		}
		fs.markMeta(x.n)
		x.n.mu.Unlock()
	}
	return 0
}

// Open opens a file.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fs.count(&fs.stats.open)
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return st(e)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isDir() {
		return fuse.Status(syscall.EISDIR)
	}
	if n.reaped {
		return fuse.ENOENT
	}
	if n.cache == nil {
		n.cache = map[uint32]*block{}
	}
	n.opens++
	out.Fh = n.ino
	out.OpenFlags = fs.openFlags()
	return fuse.OK
}

// Release closes a file; an unlinked file goes away at its last close.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return
	}
	n.mu.Lock()
	if n.opens > 0 {
		n.opens--
	}
	n.mu.Unlock()
	fs.maybeReap(n)
}

// Read reads file data.
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	fs.count(&fs.stats.read)
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return nil, st(e)
	}
	n.mu.Lock()
	if n.cache == nil {
		n.cache = map[uint32]*block{}
	}
	k, e := fs.readAt(n, buf[:min(len(buf), int(in.Size))], in.Offset)
	n.mu.Unlock()
	fs.evict()
	if e != 0 {
		return nil, st(e)
	}
	fs.add(&fs.stats.readBytes, uint64(k))
	return fuse.ReadResultData(buf[:k]), fuse.OK
}

// Write writes file data into the block cache.
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	fs.count(&fs.stats.write)
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return 0, st(e)
	}
	n.mu.Lock()
	if !n.isReg() {
		n.mu.Unlock()
		return 0, fuse.EINVAL
	}
	if n.cache == nil {
		n.cache = map[uint32]*block{}
	}
	full, e := fs.writeAt(n, data, in.Offset)
	if e == 0 {
		fs.markMeta(n)
	}
	n.mu.Unlock()
	if e != 0 {
		return 0, st(e)
	}
	fs.add(&fs.stats.writeBytes, uint64(len(data)))
	if fs.opts.NoCache {
		if err := fs.flush(); err != nil {
			return 0, st(errno(err))
		}
		return uint32(len(data)), fuse.OK
	}
	for _, idx := range full {
		fs.wb <- wbJob{n, idx}
	}
	if err := fs.throttle(); err != nil {
		return 0, st(errno(err))
	}
	fs.evict()
	return uint32(len(data)), fuse.OK
}

// Fallocate supports mode 0 (extend the size) and KEEP_SIZE (nothing to do:
// blocks are allocated when written).
func (fs *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	const keepSize = 1
	if in.Mode&^keepSize != 0 {
		return fuse.Status(syscall.EOPNOTSUPP)
	}
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return st(e)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.isReg() {
		return fuse.Status(syscall.ENODEV)
	}
	end := in.Offset + in.Length
	if end/blockSize >= maxBlocks {
		return fuse.Status(syscall.EFBIG)
	}
	if in.Mode&keepSize == 0 && end > n.attr.Size {
		n.attr.Size = end
		n.attr.Ctime = now()
		fs.markMeta(n)
	}
	return fuse.OK
}

// Flush (close(2)) is left to the default ENOSYS: the kernel then stops
// sending it, still writes its cached pages back at close, and data reaches
// zdb on fsync or write-back.

// Fsync writes everything dirty to zdb.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return st(errno(fs.flush()))
}

// FsyncDir writes everything dirty to zdb.
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return st(errno(fs.flush()))
}

// OpenDir opens a directory.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if _, e := fs.dirNode(in.NodeId); e != 0 {
		return st(e)
	}
	fs.dirsMu.Lock()
	fs.nextDir++
	out.Fh = fs.nextDir
	fs.dirs[out.Fh] = &dirHandle{}
	fs.dirsMu.Unlock()
	return fuse.OK
}

// ReleaseDir closes a directory.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {
	fs.dirsMu.Lock()
	delete(fs.dirs, in.Fh)
	fs.dirsMu.Unlock()
}

func (fs *FS) snapshot(n *node, dh *dirHandle) {
	n.mu.Lock()
	names := []string{".", ".."}
	inos := []uint64{n.ino, n.dir.parent}
	if n.ino == rootIno {
		inos[1] = rootIno
	}
	var rest []string
	for _, b := range n.dir.buckets {
		for name := range b {
			if name != "." && name != ".." {
				rest = append(rest, name)
			}
		}
	}
	sort.Strings(rest)
	for _, name := range rest {
		ino, _ := n.dir.lookup(name)
		names = append(names, name)
		inos = append(inos, ino)
	}
	n.mu.Unlock()
	dh.names, dh.inos = names, inos
}

func (fs *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	fs.count(&fs.stats.readdir)
	n, e := fs.dirNode(in.NodeId)
	if e != 0 {
		return st(e)
	}
	fs.dirsMu.Lock()
	dh := fs.dirs[in.Fh]
	fs.dirsMu.Unlock()
	if dh == nil {
		return fuse.EBADF
	}
	dh.mu.Lock()
	defer dh.mu.Unlock()
	if in.Offset == 0 || dh.names == nil {
		fs.snapshot(n, dh)
	}
	if in.Offset >= uint64(len(dh.names)) {
		return fuse.OK
	}
	fs.preload(dh.inos[max(in.Offset, 2):min(int(in.Offset)+4096, len(dh.inos))])
	for i := int(in.Offset); i < len(dh.names); i++ {
		name, ino := dh.names[i], dh.inos[i]
		de := fuse.DirEntry{Name: name, Ino: ino, Off: uint64(i + 1), Mode: syscall.S_IFDIR}
		var child *node
		if i >= 2 {
			c, e := fs.node(ino)
			if e != 0 {
				continue // a dangling name: skip it
			}
			child = c
			c.mu.Lock()
			de.Mode = c.attr.Mode
			c.mu.Unlock()
		}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		*eo = fuse.EntryOut{}
		if child != nil {
			child.mu.Lock()
			fs.fillEntry(child, eo)
			child.mu.Unlock()
			fs.addLookup(child)
		}
	}
	return fuse.OK
}

// ReadDir lists a directory.
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, false)
}

// ReadDirPlus lists a directory with attributes.
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, out, true)
}

// StatFs reports the configured size and the data namespace's usage.
func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	fs.count(&fs.stats.statfs)
	var used, entries uint64
	if r, err := fs.b.data.do("NSINFO", fs.b.data.b.Namespace); err == nil {
		used = parseUint(parseInfo(r.Str)["data_size_bytes"])
	}
	if r, err := fs.b.meta.do("NSINFO", fs.b.meta.b.Namespace); err == nil {
		entries = parseUint(parseInfo(r.Str)["entries"])
	}
	const files = 0xffffffffff
	out.Bsize = blockSize
	out.Frsize = 1024
	out.Blocks = fs.size / 1024
	out.Bfree = (fs.size - min(used, fs.size)) / 1024
	out.Bavail = out.Bfree
	out.Files = files
	out.Ffree = files - min(entries, files)
	out.NameLen = maxName
	return fuse.OK
}

// Extended attributes: the layout has no room for them. The xattr
// operations answer ENOSYS, which the kernel remembers for the mount and
// turns into EOPNOTSUPP (= ENOTSUP) for every caller, without asking again
// (writes otherwise ask for security.capability every time).

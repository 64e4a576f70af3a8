package zdbfs

import (
	"container/list"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
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
	// unforgotten holds nodes the kernel forgot while they were dirty or
	// being written back; sweep drops them once clean
	unforgotten map[*node]struct{}

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

	pages pageStore // stores into the kernel's page cache (read_store.go)

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
	if in.Valid&fuse.FATTR_SIZE != 0 {
		// after n.mu is released: no page cache store copied before the
		// size change lands after it (read_store.go)
		defer fs.pages.resized(n.ino)
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

package zdbfs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/qsfs/qsfs/zdbfs/layout"
)

// Operations that create, name, rename and remove inodes. They hold
// FS.treeMu, then the parent directories' locks, then the inodes' locks.

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
	n.fresh.Store(true)
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
	fs.pages.opened(n.ino, in.Flags)
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
	n.fresh.Store(true)
	fs.nodesMu.Lock()
	fs.nodes[ino] = n
	fs.nodesMu.Unlock()
	fs.markMeta(n)
	fs.pages.opened(ino, in.Flags)
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
	n.linksAt = time.Now()
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

// dropLink removes name, which links n, from directory p: n loses that link
// (a directory loses all of them, and p the ".." link it held) and its
// ctime. p.mu and n.mu held.
func (fs *FS) dropLink(p, n *node, name string, t uint32) {
	fs.removeName(p, name, t)
	if n.isDir() {
		n.attr.Links = 0
		p.attr.Links = max(p.attr.Links-1, 2)
	} else if n.attr.Links > 0 {
		n.attr.Links--
	}
	n.linksAt = time.Now()
	n.attr.Ctime = t
	fs.markMeta(n)
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
		fs.dropLink(p, n, name, now())
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
		fs.dropLink(p2, dst, newName, t)
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

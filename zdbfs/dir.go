package zdbfs

import (
	"sort"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

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
			// The kernel adjusts a file's link count itself on link and
			// unlink; attributes sent here can reach it between our reply
			// to such a call and its own adjustment, leaving it with a
			// count one too low (0: link(2) then fails with ENOENT). So
			// files whose link count just changed get no attributes here
			// (node id 0): the kernel looks them up when it needs them.
			if child.isDir() || time.Since(child.linksAt) > linkSettle {
				fs.fillEntry(child, eo)
			}
			child.mu.Unlock()
			if eo.NodeId != 0 {
				fs.addLookup(child)
			}
		}
	}
	return fuse.OK
}

// linkSettle is how long after a link count change readdirplus leaves a
// file's attributes out.
const linkSettle = 2 * time.Second

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

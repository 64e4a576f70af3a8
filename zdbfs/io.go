package zdbfs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Open opens a file.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fs.count(&fs.stats.open)
	n, e := fs.node(in.NodeId)
	if e != 0 {
		return st(e)
	}
	// before the handle exists: stores in flight finish first
	fs.pages.opened(n.ino, in.Flags)
	n.mu.Lock()
	switch {
	case n.isDir():
		e = syscall.EISDIR
	case n.reaped:
		e = syscall.ENOENT
	default:
		if n.cache == nil {
			n.cache = map[uint32]*block{}
		}
		n.opens++
	}
	n.mu.Unlock()
	if e != 0 {
		fs.pages.closed(n.ino, in.Flags)
		return st(e)
	}
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
	fs.pages.closed(n.ino, in.Flags)
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
	var job *storeJob
	if e == 0 {
		job = fs.storeRest(n, in.Offset, uint64(k))
	}
	n.mu.Unlock()
	fs.evict()
	if e != 0 {
		return nil, st(e)
	}
	if job != nil {
		go fs.store(job)
	}
	fs.add(&fs.stats.readBytes, uint64(k))
	return fuse.ReadResultData(buf[:k]), fuse.OK
}

// Write writes file data: whole aligned blocks straight to zdb
// (write_direct.go), the rest into the block cache.
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
	sends, full, e := fs.writeBlocks(n, data, in.Offset)
	if e == 0 || len(sends) > 0 {
		fs.markMeta(n)
	}
	n.mu.Unlock()
	if len(sends) > 0 {
		// whole blocks go to zdb from data before it is answered, with
		// the cached blocks this WRITE completed
		var jobs []*bjob
		if len(full) > 0 {
			jobs = fs.collectJobs(n, full, nil)
			full = nil
		}
		fs.sendDirect(n, sends, jobs)
	}
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

// Flush (close(2)) answers ENOSYS: the kernel then stops sending it (two
// requests per file saved for a shell's `>file`), still writes its cached
// pages and times back at close, and data reaches zdb on fsync or
// write-back. (go-fuse's default answers OK, which keeps them coming.)
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// Fsync writes everything dirty to zdb.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return st(errno(fs.flush()))
}

// FsyncDir writes everything dirty to zdb.
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return st(errno(fs.flush()))
}

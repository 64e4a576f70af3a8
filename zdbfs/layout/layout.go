// Package layout owns the byte layouts that 0-db-fs 0.1.11 stores in its three
// sequential 0-db namespaces: the 24-byte namespace headers at id 0, inode
// records (file, directory, symlink, special), directory-list ("dirlist")
// objects and the dirlist bucket function. It encodes and decodes values
// only; it does not talk to 0-db and knows nothing of FUSE.
//
// All integers are little-endian. Offsets follow the packed C structs of
// 0-db-fs (src/zdbfs.h): zdb_inode_t is packed (44 bytes), zdbfs_header_t and
// zdb_dir_header_t are not (24 and 16 bytes, with padding).
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// BlockSize is the size of one data block in the data namespace.
const BlockSize = 128 * 1024

// DirlistSize is the number of dirlist buckets of a directory.
const DirlistSize = 128

// EmptySlot marks an unused dirlist slot in a directory inode (the C code
// pre-fills its buffer with 0x42).
const EmptySlot = 0x4242424242424242

// InodeSize is the size of the fixed inode part.
const InodeSize = 44

// HeaderSize is the size of a namespace header.
const HeaderSize = 24

// DirHeaderSize is the size of a dirlist header (u64 id, u32 count, 4 bytes padding).
const DirHeaderSize = 16

// Version is the header version written by 0-db-fs 0.1.11.
const Version = 1

// Magics of the three namespace headers.
const (
	MagicMeta = "ZDBFSM"
	MagicData = "ZDBFSD"
	MagicTemp = "ZDBFST"
)

// Mode bits of the file type (as in stat(2)).
const (
	ModeType = 0o170000
	ModeDir  = 0o040000
	ModeReg  = 0o100000
	ModeLink = 0o120000
)

// ErrShort is returned for a value too short for its layout.
var ErrShort = errors.New("value too short")

// Header is the record at id 0 of each namespace.
type Header struct {
	Magic   string
	Version uint16
	Flags   uint16
	Size    uint64
}

// EncodeHeader returns the 24-byte header.
func EncodeHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	copy(b[0:6], h.Magic)
	binary.LittleEndian.PutUint16(b[6:], h.Version)
	binary.LittleEndian.PutUint16(b[8:], h.Flags)
	binary.LittleEndian.PutUint64(b[16:], h.Size)
	return b
}

// DecodeHeader parses a header and checks its magic.
func DecodeHeader(b []byte, magic string) (Header, error) {
	if len(b) < 8 {
		return Header{}, fmt.Errorf("header of %d bytes: %w", len(b), ErrShort)
	}
	h := Header{Magic: string(b[0:6]), Version: binary.LittleEndian.Uint16(b[6:])}
	if h.Magic != magic {
		return h, fmt.Errorf("header magic %q, want %q", h.Magic, magic)
	}
	if len(b) >= 10 {
		h.Flags = binary.LittleEndian.Uint16(b[8:])
	}
	if len(b) >= HeaderSize {
		h.Size = binary.LittleEndian.Uint64(b[16:])
	}
	return h, nil
}

// Inode is the fixed part of an inode record. Field widths are those of the
// layout; callers check ranges before narrowing.
type Inode struct {
	Mode  uint32
	Ino   uint64
	Dev   uint32
	UID   uint16
	GID   uint16
	Size  uint64
	Links uint32
	Atime uint32
	Mtime uint32
	Ctime uint32
}

// IsDir reports whether the inode is a directory.
func (i *Inode) IsDir() bool { return i.Mode&ModeType == ModeDir }

// IsLink reports whether the inode is a symbolic link.
func (i *Inode) IsLink() bool { return i.Mode&ModeType == ModeLink }

func putInode(b []byte, i *Inode) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], i.Mode)
	le.PutUint64(b[4:], i.Ino)
	le.PutUint32(b[12:], i.Dev)
	le.PutUint16(b[16:], i.UID)
	le.PutUint16(b[18:], i.GID)
	le.PutUint64(b[20:], i.Size)
	le.PutUint32(b[28:], i.Links)
	le.PutUint32(b[32:], i.Atime)
	le.PutUint32(b[36:], i.Mtime)
	le.PutUint32(b[40:], i.Ctime)
}

func getInode(b []byte) Inode {
	le := binary.LittleEndian
	return Inode{
		Mode: le.Uint32(b[0:]), Ino: le.Uint64(b[4:]), Dev: le.Uint32(b[12:]),
		UID: le.Uint16(b[16:]), GID: le.Uint16(b[18:]), Size: le.Uint64(b[20:]),
		Links: le.Uint32(b[28:]), Atime: le.Uint32(b[32:]), Mtime: le.Uint32(b[36:]),
		Ctime: le.Uint32(b[40:]),
	}
}

// Record is a decoded inode record with its type-specific extension.
type Record struct {
	Inode
	Blocks  []uint32            // regular files and special files: data ids, 0 = hole
	Target  []byte              // symlinks: target without the trailing NUL
	Dirlist [DirlistSize]uint64 // directories: dirlist ids, 0 = unused
}

// EncodeFile encodes a regular (or special) file inode: 44 bytes, u64 block
// count, u32 block ids.
func EncodeFile(i *Inode, blocks []uint32) []byte {
	b := make([]byte, InodeSize+8+4*len(blocks))
	putInode(b, i)
	binary.LittleEndian.PutUint64(b[InodeSize:], uint64(len(blocks)))
	for n, id := range blocks {
		binary.LittleEndian.PutUint32(b[InodeSize+8+4*n:], id)
	}
	return b
}

// EncodeSymlink encodes a symlink inode: 44 bytes then the target and a NUL.
// The inode size is stored as len(target)+1, as 0-db-fs does.
func EncodeSymlink(i *Inode, target []byte) []byte {
	b := make([]byte, InodeSize+len(target)+1)
	in := *i
	in.Size = uint64(len(target)) + 1
	putInode(b, &in)
	copy(b[InodeSize:], target)
	return b
}

// EncodeDir encodes a directory inode: 44 bytes then 128 u64 dirlist ids
// (EmptySlot for unused slots).
func EncodeDir(i *Inode, dirlist *[DirlistSize]uint64) []byte {
	b := make([]byte, InodeSize+8*DirlistSize)
	putInode(b, i)
	for n, id := range dirlist {
		if id == 0 {
			id = EmptySlot
		}
		binary.LittleEndian.PutUint64(b[InodeSize+8*n:], id)
	}
	return b
}

// DecodeRecord decodes any inode record.
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) < InodeSize {
		return nil, fmt.Errorf("inode of %d bytes: %w", len(b), ErrShort)
	}
	r := &Record{Inode: getInode(b)}
	ext := b[InodeSize:]
	switch {
	case r.IsDir():
		for n := 0; n < DirlistSize && 8*n+8 <= len(ext); n++ {
			id := binary.LittleEndian.Uint64(ext[8*n:])
			if id == EmptySlot {
				id = 0
			}
			r.Dirlist[n] = id
		}
	case r.IsLink():
		t := ext
		if n := indexNul(t); n >= 0 {
			t = t[:n]
		}
		r.Target = append([]byte(nil), t...)
	default:
		if len(ext) < 8 {
			return r, nil
		}
		n := binary.LittleEndian.Uint64(ext)
		if n > uint64(len(ext)-8)/4 {
			return nil, fmt.Errorf("inode lists %d blocks in %d bytes: %w", n, len(ext)-8, ErrShort)
		}
		r.Blocks = make([]uint32, n)
		for k := range r.Blocks {
			r.Blocks[k] = binary.LittleEndian.Uint32(ext[8+4*k:])
		}
	}
	return r, nil
}

func indexNul(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// DirEntry is one entry of a dirlist object.
type DirEntry struct {
	Name string
	Ino  uint64
}

// Bucket returns the dirlist bucket of a name: the sum of its bytes as C
// chars, accumulated in a size_t, modulo 128.
func Bucket(name string) int {
	var acc uint64
	for i := 0; i < len(name); i++ {
		acc += uint64(int64(int8(name[i])))
	}
	return int(acc % DirlistSize)
}

// EncodeDirlist encodes a dirlist object whose own meta id is id. Entries are
// written sorted by name (strcmp order).
func EncodeDirlist(id uint64, entries []DirEntry) []byte {
	sorted := entries
	if !sort.SliceIsSorted(entries, func(a, b int) bool { return entries[a].Name < entries[b].Name }) {
		sorted = append([]DirEntry(nil), entries...)
		sort.Slice(sorted, func(a, b int) bool { return sorted[a].Name < sorted[b].Name })
	}
	size := DirHeaderSize
	for _, e := range sorted {
		size += 2 + 8 + len(e.Name) + 1
	}
	b := make([]byte, size)
	binary.LittleEndian.PutUint64(b[0:], id)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(sorted)))
	p := DirHeaderSize
	for _, e := range sorted {
		binary.LittleEndian.PutUint16(b[p:], uint16(len(e.Name)))
		binary.LittleEndian.PutUint64(b[p+2:], e.Ino)
		copy(b[p+10:], e.Name)
		p += 2 + 8 + len(e.Name) + 1
	}
	return b
}

// DecodeDirlist decodes a dirlist object.
func DecodeDirlist(b []byte) ([]DirEntry, error) {
	if len(b) < DirHeaderSize {
		return nil, fmt.Errorf("dirlist of %d bytes: %w", len(b), ErrShort)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	out := make([]DirEntry, 0, n)
	p := DirHeaderSize
	for k := uint32(0); k < n; k++ {
		if p+10 > len(b) {
			return out, fmt.Errorf("dirlist entry %d: %w", k, ErrShort)
		}
		l := int(binary.LittleEndian.Uint16(b[p:]))
		ino := binary.LittleEndian.Uint64(b[p+2:])
		if p+10+l > len(b) {
			return out, fmt.Errorf("dirlist entry %d name: %w", k, ErrShort)
		}
		out = append(out, DirEntry{Name: string(b[p+10 : p+10+l]), Ino: ino})
		p += 10 + l + 1
	}
	return out, nil
}

// EntrySize is what 0-db-fs adds to a directory's size for one entry.
func EntrySize(name string) uint64 { return uint64(2 + 8 + len(name) + 1) }

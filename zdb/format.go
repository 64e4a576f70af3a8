package zdb

import (
	"encoding/binary"
	"hash/crc32"
)

// On-disk layout of official 0-db 2.0.x (all little-endian, packed).
const (
	indexMagic   = "IDX0"
	dataMagic    = "DAT0"
	indexVersion = 4
	dataVersion  = 3
	nsVersion    = 1

	indexHeaderSize = 29 // magic, version, created, opened, fileid, mode
	dataHeaderSize  = 28 // magic, version, created, opened, fileid
	indexItemSize   = 34 // fixed part of an index entry, key follows
	dataEntrySize   = 18 // fixed part of a data entry, key and payload follow
	nsHeaderSize    = 15 // version, namelen, passlen, maxsize, flags

	flagDeleted   = 1
	flagTruncated = 2

	nsFlagPublic   = 1
	nsFlagWorm     = 2
	nsFlagExtended = 4

	modeUser = 0
	modeSeq  = 1

	maxKeyLength  = 255
	maxPayload    = 8 << 20
	maxNameLength = 128
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the CRC-32C of p as official zdb computes it: initial value 0
// and no final inversion.
func crc32c(p []byte) uint32 {
	return ^crc32.Update(0xFFFFFFFF, castagnoli, p)
}

// indexItem is one index entry (index_item_t) without its key.
type indexItem struct {
	idLength  uint8
	offset    uint32 // offset of the data entry in the data file
	length    uint32 // payload length
	previous  uint32 // offset of the previous index entry
	flags     uint8
	dataID    uint32
	timestamp uint32
	crc       uint32
	parentID  uint32
	parentOff uint32
}

func (it *indexItem) encode(b []byte) {
	b[0] = it.idLength
	binary.LittleEndian.PutUint32(b[1:], it.offset)
	binary.LittleEndian.PutUint32(b[5:], it.length)
	binary.LittleEndian.PutUint32(b[9:], it.previous)
	b[13] = it.flags
	binary.LittleEndian.PutUint32(b[14:], it.dataID)
	binary.LittleEndian.PutUint32(b[18:], it.timestamp)
	binary.LittleEndian.PutUint32(b[22:], it.crc)
	binary.LittleEndian.PutUint32(b[26:], it.parentID)
	binary.LittleEndian.PutUint32(b[30:], it.parentOff)
}

func decodeIndexItem(b []byte) indexItem {
	return indexItem{
		idLength:  b[0],
		offset:    binary.LittleEndian.Uint32(b[1:]),
		length:    binary.LittleEndian.Uint32(b[5:]),
		previous:  binary.LittleEndian.Uint32(b[9:]),
		flags:     b[13],
		dataID:    binary.LittleEndian.Uint32(b[14:]),
		timestamp: binary.LittleEndian.Uint32(b[18:]),
		crc:       binary.LittleEndian.Uint32(b[22:]),
		parentID:  binary.LittleEndian.Uint32(b[26:]),
		parentOff: binary.LittleEndian.Uint32(b[30:]),
	}
}

// dataEntry is one data entry header (data_entry_header_t) without key and
// payload.
type dataEntry struct {
	idLength  uint8
	length    uint32
	previous  uint32
	crc       uint32
	flags     uint8
	timestamp uint32
}

func (d *dataEntry) encode(b []byte) {
	b[0] = d.idLength
	binary.LittleEndian.PutUint32(b[1:], d.length)
	binary.LittleEndian.PutUint32(b[5:], d.previous)
	binary.LittleEndian.PutUint32(b[9:], d.crc)
	b[13] = d.flags
	binary.LittleEndian.PutUint32(b[14:], d.timestamp)
}

func decodeDataEntry(b []byte) dataEntry {
	return dataEntry{
		idLength:  b[0],
		length:    binary.LittleEndian.Uint32(b[1:]),
		previous:  binary.LittleEndian.Uint32(b[5:]),
		crc:       binary.LittleEndian.Uint32(b[9:]),
		flags:     b[13],
		timestamp: binary.LittleEndian.Uint32(b[14:]),
	}
}

func indexHeader(fileID uint32, mode uint8) []byte {
	b := make([]byte, indexHeaderSize)
	copy(b, indexMagic)
	binary.LittleEndian.PutUint32(b[4:], indexVersion)
	// created and opened stay 0, as official writes them
	binary.LittleEndian.PutUint32(b[24:], fileID)
	b[28] = mode
	return b
}

func dataHeader(fileID uint32) []byte {
	b := make([]byte, dataHeaderSize)
	copy(b, dataMagic)
	binary.LittleEndian.PutUint32(b[4:], dataVersion)
	binary.LittleEndian.PutUint32(b[24:], fileID)
	return b
}

// nsDescriptor is the content of zdb-namespace.
type nsDescriptor struct {
	name     string
	password string
	maxsize  uint64
	public   bool
	worm     bool
}

func (d nsDescriptor) encode() []byte {
	b := make([]byte, nsHeaderSize, nsHeaderSize+len(d.name)+len(d.password))
	binary.LittleEndian.PutUint32(b, nsVersion)
	b[4] = uint8(len(d.name))
	b[5] = uint8(len(d.password))
	binary.LittleEndian.PutUint64(b[6:], d.maxsize)
	flags := uint8(nsFlagExtended)
	if d.public {
		flags |= nsFlagPublic
	}
	if d.worm {
		flags |= nsFlagWorm
	}
	b[14] = flags
	b = append(b, d.name...)
	return append(b, d.password...)
}

func decodeNSDescriptor(b []byte) (nsDescriptor, bool) {
	if len(b) < nsHeaderSize {
		return nsDescriptor{}, false
	}
	nl, pl := int(b[4]), int(b[5])
	if len(b) < nsHeaderSize+nl+pl {
		return nsDescriptor{}, false
	}
	flags := b[14]
	d := nsDescriptor{
		name:     string(b[nsHeaderSize : nsHeaderSize+nl]),
		password: string(b[nsHeaderSize+nl : nsHeaderSize+nl+pl]),
		maxsize:  binary.LittleEndian.Uint64(b[6:]),
		public:   flags&nsFlagPublic != 0,
		worm:     flags&nsFlagWorm != 0,
	}
	if flags&nsFlagExtended == 0 {
		// legacy descriptors without the extended flag are public
		d.public = true
	}
	return d, true
}

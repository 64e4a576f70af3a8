package zdb

import (
	"fmt"
	"strconv"
	"strings"
)

// Admin inspection commands: HOOKS, INDEX DIRTY [RESET], DATA RAW.

func cmdHooks(c *session, _ [][]byte) {
	if !c.requireAdmin() {
		return
	}
	runs := c.srv.hooks.list()
	c.rw.array(len(runs))
	for _, r := range runs {
		c.rw.array(6)
		c.rw.bulkString(r.event)
		c.rw.array(len(r.args))
		for _, a := range r.args {
			c.rw.bulkString(a)
		}
		c.rw.integer(int64(r.pid))
		c.rw.integer(r.created)
		c.rw.integer(r.finished)
		c.rw.integer(int64(r.status))
	}
}

func cmdIndex(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	if len(args) < 2 {
		c.rw.err("Missing arguments")
		return
	}
	if !strings.EqualFold(string(args[1]), "DIRTY") {
		c.rw.err("Unknown subcommand")
		return
	}
	ns := c.ns
	if len(args) >= 3 && strings.EqualFold(string(args[2]), "RESET") {
		ns.mu.Lock()
		ns.dirty = make(map[uint32]struct{})
		ns.mu.Unlock()
		c.rw.status("OK")
		return
	}
	ns.mu.RLock()
	ids := ns.dirtyIDs()
	ns.mu.RUnlock()
	c.rw.array(len(ids))
	for _, id := range ids {
		c.rw.integer(int64(id))
	}
}

func cmdData(c *session, args [][]byte) {
	if !c.requireAdmin() {
		return
	}
	if len(args) < 2 {
		c.rw.err("Missing arguments")
		return
	}
	if len(args) != 4 || string(args[1]) != "RAW" && string(args[1]) != "raw" {
		c.rw.err("Invalid Request")
		return
	}
	fileID, err1 := strconv.ParseUint(string(args[2]), 10, 32)
	offset, err2 := strconv.ParseUint(string(args[3]), 10, 32)
	if err1 != nil || err2 != nil {
		c.rw.err("Invalid Request")
		return
	}
	key, de, payload, err := c.ns.dataRaw(uint32(fileID), int64(offset))
	if err != nil {
		c.replyErr(err)
		return
	}
	c.rw.array(6)
	c.rw.bulk(key)
	c.rw.integer(int64(de.previous))
	c.rw.bulkString(fmt.Sprintf("0x%08x", de.crc))
	c.rw.integer(int64(de.flags))
	c.rw.integer(int64(de.timestamp))
	if de.length == 0 && de.flags&flagDeleted != 0 {
		c.rw.null()
	} else {
		c.rw.bulk(payload)
	}
}

// dataRaw reads the data entry at offset in d<fileID> (DATA RAW).
func (ns *Namespace) dataRaw(fileID uint32, offset int64) (key []byte, de dataEntry, payload []byte, err error) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	errInternal := errReply("Unexpected Internal Error")
	f, err := ns.file(false, fileID)
	if err != nil {
		return nil, de, nil, errReply("Invalid Request")
	}
	size := ns.datEnd
	if fileID != ns.curID {
		st, err := f.Stat()
		if err != nil {
			return nil, de, nil, errReply("Invalid Request")
		}
		size = st.Size()
	}
	if offset >= size {
		return nil, de, nil, errReply("EOF")
	}
	if offset < dataHeaderSize || offset+dataEntrySize > size {
		return nil, de, nil, errInternal
	}
	hdr := make([]byte, dataEntrySize)
	if _, err := f.ReadAt(hdr, offset); err != nil {
		return nil, de, nil, errInternal
	}
	de = decodeDataEntry(hdr)
	end := offset + dataEntrySize + int64(de.idLength) + int64(de.length)
	if de.length > maxPayload || end > size || de.flags > (flagDeleted|flagTruncated) {
		return nil, de, nil, errInternal
	}
	body := make([]byte, int(de.idLength)+int(de.length))
	if _, err := f.ReadAt(body, offset+dataEntrySize); err != nil {
		return nil, de, nil, errInternal
	}
	return body[:de.idLength], de, body[de.idLength:], nil
}

// Package proto is the zstor daemon socket protocol, compatible with the
// official zstor: each message is a big-endian u16 length followed by the
// bincode encoding of ZstorCommand (request) or ZstorResponse (reply).
//
// It owns only the wire types. Executing commands is the daemon's job.
package proto

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/meta"
)

// Command kinds (ZstorCommand variant indexes).
const (
	Store    uint32 = 0
	Retrieve uint32 = 1
	Rebuild  uint32 = 2
	Check    uint32 = 3
)

// Command is a ZstorCommand. Fields are used per kind:
// Store{File, KeyPath, SaveFailure, Delete, Blocking}, Retrieve{File},
// Rebuild{File?, Key?, Meta?}, Check{File}.
type Command struct {
	Kind        uint32
	File        string
	HasFile     bool // Rebuild only: file is Some
	KeyPath     *string
	SaveFailure bool
	Delete      bool
	Blocking    bool
	Key         *string
	Meta        *meta.MetaData
}

// Response kinds (ZstorResponse variant indexes).
const (
	Success  uint32 = 0
	Err      uint32 = 1
	Checksum uint32 = 2
)

// Response is a ZstorResponse.
type Response struct {
	Kind     uint32
	Err      string
	Checksum codec.Checksum
}

// Marshal encodes the command.
func (c *Command) Marshal() ([]byte, error) {
	var e meta.Encoder
	e.U32(c.Kind)
	switch c.Kind {
	case Store:
		e.String(c.File)
		e.OptString(c.KeyPath)
		e.Bool(c.SaveFailure)
		e.Bool(c.Delete)
		e.Bool(c.Blocking)
	case Retrieve, Check:
		e.String(c.File)
	case Rebuild:
		if c.HasFile {
			e.U8(1)
			e.String(c.File)
		} else {
			e.U8(0)
		}
		e.OptString(c.Key)
		if c.Meta == nil {
			e.U8(0)
		} else {
			e.U8(1)
			if err := c.Meta.Encode(&e); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("unknown command kind %d", c.Kind)
	}
	return e.Buf, nil
}

// UnmarshalCommand decodes a command.
func UnmarshalCommand(b []byte) (*Command, error) {
	d := &meta.Decoder{Buf: b}
	c := &Command{Kind: d.U32()}
	switch c.Kind {
	case Store:
		c.File = d.String()
		c.KeyPath = d.OptString()
		c.SaveFailure = d.Bool()
		c.Delete = d.Bool()
		c.Blocking = d.Bool()
	case Retrieve, Check:
		c.File = d.String()
	case Rebuild:
		if d.Option() {
			c.HasFile = true
			c.File = d.String()
		}
		c.Key = d.OptString()
		if d.Option() {
			md, err := meta.Decode(d)
			if err != nil {
				return nil, err
			}
			c.Meta = md
		}
	default:
		if d.Err == nil {
			return nil, fmt.Errorf("unknown command variant %d", c.Kind)
		}
	}
	if d.Err != nil {
		return nil, fmt.Errorf("decode command: %w", d.Err)
	}
	if len(d.Buf) != 0 {
		return nil, fmt.Errorf("decode command: %d trailing bytes", len(d.Buf))
	}
	return c, nil
}

// Marshal encodes the response.
func (r *Response) Marshal() []byte {
	var e meta.Encoder
	e.U32(r.Kind)
	switch r.Kind {
	case Err:
		e.String(r.Err)
	case Checksum:
		e.Bytes(r.Checksum[:])
	}
	return e.Buf
}

// UnmarshalResponse decodes a response.
func UnmarshalResponse(b []byte) (*Response, error) {
	d := &meta.Decoder{Buf: b}
	r := &Response{Kind: d.U32()}
	switch r.Kind {
	case Success:
	case Err:
		r.Err = d.String()
	case Checksum:
		copy(r.Checksum[:], d.Bytes(codec.ChecksumSize))
	default:
		if d.Err == nil {
			return nil, fmt.Errorf("unknown response variant %d", r.Kind)
		}
	}
	if d.Err != nil {
		return nil, fmt.Errorf("decode response: %w", d.Err)
	}
	return r, nil
}

// MaxFrame is the largest message the u16 length allows.
const MaxFrame = 1<<16 - 1

// WriteFrame writes a length-prefixed message.
func WriteFrame(w io.Writer, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("message of %d bytes exceeds the %d byte frame limit", len(payload), MaxFrame)
	}
	buf := make([]byte, 2+len(payload))
	binary.BigEndian.PutUint16(buf, uint16(len(payload)))
	copy(buf[2:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one length-prefixed message.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read frame body: %w", err)
	}
	return buf, nil
}

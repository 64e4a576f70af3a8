package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Encoder writes bincode 1 with default options: little-endian fixed-size
// integers, usize as u64, u64 length prefixes, u32 enum variant tags and u8
// option tags. The daemon protocol (package proto) uses it too.
type Encoder struct{ Buf []byte }

// U8 appends a byte.
func (e *Encoder) U8(v uint8) { e.Buf = append(e.Buf, v) }

// Bool appends a bool as one byte.
func (e *Encoder) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// U16 appends a little-endian u16.
func (e *Encoder) U16(v uint16) { e.Buf = binary.LittleEndian.AppendUint16(e.Buf, v) }

// U32 appends a little-endian u32 (also enum variant tags).
func (e *Encoder) U32(v uint32) { e.Buf = binary.LittleEndian.AppendUint32(e.Buf, v) }

// U64 appends a little-endian u64 (also usize and lengths).
func (e *Encoder) U64(v uint64) { e.Buf = binary.LittleEndian.AppendUint64(e.Buf, v) }

// Bytes appends raw bytes (fixed-size arrays).
func (e *Encoder) Bytes(b []byte) { e.Buf = append(e.Buf, b...) }

// String appends a length-prefixed string (String, PathBuf, &str).
func (e *Encoder) String(s string) {
	e.U64(uint64(len(s)))
	e.Buf = append(e.Buf, s...)
}

// OptString appends Option<String>.
func (e *Encoder) OptString(s *string) {
	if s == nil {
		e.U8(0)
		return
	}
	e.U8(1)
	e.String(*s)
}

// SocketAddr appends a std::net::SocketAddr as serde serializes it for
// binary formats: variant 0 (V4) + 4 octets or variant 1 (V6) + 16 octets,
// then the u16 port.
func (e *Encoder) SocketAddr(ap netip.AddrPort) {
	a := ap.Addr()
	if a.Is4() {
		e.U32(0)
		b := a.As4()
		e.Bytes(b[:])
	} else {
		e.U32(1)
		b := a.As16()
		e.Bytes(b[:])
	}
	e.U16(ap.Port())
}

// ErrShort is returned when bincode input ends early.
var ErrShort = errors.New("bincode: unexpected end of input")

// Decoder reads what Encoder writes. The first error sticks; check Err.
type Decoder struct {
	Buf []byte
	Err error
}

func (d *Decoder) take(n int) []byte {
	if d.Err != nil {
		return nil
	}
	if n < 0 || len(d.Buf) < n {
		d.Err = ErrShort
		return nil
	}
	b := d.Buf[:n]
	d.Buf = d.Buf[n:]
	return b
}

// U8 reads a byte.
func (d *Decoder) U8() uint8 {
	b := d.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// Bool reads a bool.
func (d *Decoder) Bool() bool {
	v := d.U8()
	if v > 1 && d.Err == nil {
		d.Err = fmt.Errorf("bincode: invalid bool %d", v)
	}
	return v == 1
}

// U16 reads a u16.
func (d *Decoder) U16() uint16 {
	b := d.take(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

// U32 reads a u32.
func (d *Decoder) U32() uint32 {
	b := d.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// U64 reads a u64.
func (d *Decoder) U64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// Bytes reads n raw bytes (copied).
func (d *Decoder) Bytes(n int) []byte { return append([]byte(nil), d.take(n)...) }

// Len reads a u64 length and checks it against the remaining input.
func (d *Decoder) Len(minElem int) int {
	n := d.U64()
	if d.Err == nil && (minElem > 0 && n > uint64(len(d.Buf)/minElem)) {
		d.Err = fmt.Errorf("bincode: length %d exceeds input", n)
		return 0
	}
	return int(n)
}

// String reads a length-prefixed string.
func (d *Decoder) String() string { return string(d.take(d.Len(1))) }

// Option reads an option tag.
func (d *Decoder) Option() bool {
	v := d.U8()
	if v > 1 && d.Err == nil {
		d.Err = fmt.Errorf("bincode: invalid option tag %d", v)
	}
	return v == 1
}

// OptString reads Option<String>.
func (d *Decoder) OptString() *string {
	if !d.Option() {
		return nil
	}
	s := d.String()
	return &s
}

// SocketAddr reads a std::net::SocketAddr.
func (d *Decoder) SocketAddr() netip.AddrPort {
	var a netip.Addr
	switch v := d.U32(); v {
	case 0:
		b := d.take(4)
		if b != nil {
			a = netip.AddrFrom4([4]byte(b))
		}
	case 1:
		b := d.take(16)
		if b != nil {
			a = netip.AddrFrom16([16]byte(b))
		}
	default:
		if d.Err == nil {
			d.Err = fmt.Errorf("bincode: invalid SocketAddr variant %d", v)
		}
	}
	return netip.AddrPortFrom(a, d.U16())
}

package codec

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/golang/snappy"
)

// Snappy framing format constants (the format of snap::write::FrameEncoder
// and golang/snappy's Writer).
const (
	FrameSize       = 65536 // uncompressed bytes per chunk
	streamHeader    = "\xff\x06\x00\x00sNaPpY"
	chunkCompressed = 0x00
	chunkRaw        = 0x01
	frameHeaderLen  = 8 // type, 3-byte length, 4-byte masked crc
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func maskedCRC(b []byte) uint32 {
	c := crc32.Update(0, crcTable, b)
	return (c>>15 | c<<17) + 0xa282ead8
}

// FrameCompressor produces the snappy framing format, compressing the
// 64 KiB chunks of each Append call on several cores. Its output is byte for
// byte what golang/snappy's NewBufferedWriter writes for the same stream when
// every Append but the last is a multiple of FrameSize.
type FrameCompressor struct {
	workers int
	started bool
	scratch [][]byte
}

// NewFrameCompressor returns a compressor using up to workers goroutines
// (0 = GOMAXPROCS).
func NewFrameCompressor(workers int) *FrameCompressor {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &FrameCompressor{workers: workers}
}

// Append compresses src and appends the frames (and, on the first non-empty
// call, the stream identifier) to dst.
func (fc *FrameCompressor) Append(dst, src []byte) []byte {
	if len(src) == 0 {
		return dst
	}
	if !fc.started {
		fc.started = true
		dst = append(dst, streamHeader...)
	}
	n := (len(src) + FrameSize - 1) / FrameSize
	for len(fc.scratch) < n {
		fc.scratch = append(fc.scratch, make([]byte, snappy.MaxEncodedLen(FrameSize)))
	}
	out := make([][]byte, n)
	crcs := make([]uint32, n)
	encode := func(i int) {
		end := min((i+1)*FrameSize, len(src))
		u := src[i*FrameSize : end]
		crcs[i] = maskedCRC(u)
		c := snappy.Encode(fc.scratch[i], u)
		if len(c) >= len(u)-len(u)/8 {
			c = nil // stored raw
		}
		out[i] = c
	}
	if n == 1 || fc.workers == 1 {
		for i := 0; i < n; i++ {
			encode(i)
		}
	} else {
		var wg sync.WaitGroup
		next := make(chan int, n)
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		for w := 0; w < min(fc.workers, n); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					encode(i)
				}
			}()
		}
		wg.Wait()
	}
	for i := 0; i < n; i++ {
		end := min((i+1)*FrameSize, len(src))
		u := src[i*FrameSize : end]
		typ, body := byte(chunkCompressed), out[i]
		if body == nil {
			typ, body = chunkRaw, u
		}
		l := 4 + len(body)
		c := crcs[i]
		dst = append(dst, typ, byte(l), byte(l>>8), byte(l>>16), byte(c), byte(c>>8), byte(c>>16), byte(c>>24))
		dst = append(dst, body...)
	}
	return dst
}

// MaxFramedLen bounds the framed output for n input bytes.
func MaxFramedLen(n int) int {
	frames := (n + FrameSize - 1) / FrameSize
	return len(streamHeader) + frames*(frameHeaderLen+snappy.MaxEncodedLen(FrameSize))
}

// Compress returns src in the snappy framing format.
func Compress(src []byte) []byte {
	return NewFrameCompressor(0).Append(nil, src)
}

// Decompress writes the decoded framed stream src to w and returns the
// number of bytes written. Chunk checksums are verified.
func Decompress(w io.Writer, src []byte) (int64, error) {
	n, err := io.Copy(w, snappy.NewReader(bytes.NewReader(src)))
	if err != nil {
		return n, fmt.Errorf("snappy decompress: %w", err)
	}
	return n, nil
}

// DecodeFramed writes the decoded framed stream src to w, one write per
// chunk: stored chunks are written straight from src, compressed ones
// through one scratch buffer. Chunk checksums are verified; reserved
// skippable chunks and padding are skipped as the format requires.
func DecodeFramed(w io.Writer, src []byte) (int64, error) {
	var total int64
	scratch := make([]byte, FrameSize)
	first := true
	for len(src) > 0 {
		if len(src) < 4 {
			return total, fmt.Errorf("snappy framing: truncated chunk header")
		}
		typ := src[0]
		n := int(src[1]) | int(src[2])<<8 | int(src[3])<<16
		if len(src) < 4+n {
			return total, fmt.Errorf("snappy framing: chunk of %d bytes truncated", n)
		}
		body := src[4 : 4+n]
		src = src[4+n:]
		if first && typ != 0xff {
			return total, fmt.Errorf("snappy framing: missing stream identifier")
		}
		first = false
		switch {
		case typ == 0xff:
			if string(body) != streamHeader[4:] {
				return total, fmt.Errorf("snappy framing: bad stream identifier")
			}
			continue
		case typ == chunkCompressed || typ == chunkRaw:
			if n < 4 {
				return total, fmt.Errorf("snappy framing: chunk too short")
			}
			want := uint32(body[0]) | uint32(body[1])<<8 | uint32(body[2])<<16 | uint32(body[3])<<24
			data := body[4:]
			if typ == chunkCompressed {
				l, err := snappy.DecodedLen(data)
				if err != nil || l > FrameSize {
					return total, fmt.Errorf("snappy framing: bad compressed chunk")
				}
				if data, err = snappy.Decode(scratch, data); err != nil {
					return total, fmt.Errorf("snappy framing: %w", err)
				}
			} else if len(data) > FrameSize {
				return total, fmt.Errorf("snappy framing: stored chunk too large")
			}
			if maskedCRC(data) != want {
				return total, fmt.Errorf("snappy framing: chunk checksum mismatch")
			}
			m, err := w.Write(data)
			total += int64(m)
			if err != nil {
				return total, err
			}
		case typ >= 0x80: // reserved skippable and padding (0xfe)
			continue
		default:
			return total, fmt.Errorf("snappy framing: reserved unskippable chunk type %#x", typ)
		}
	}
	return total, nil
}

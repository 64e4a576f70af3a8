package codec

import (
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Pad appends PKCS#7-style padding so len is a multiple of dataShards: always
// 1..dataShards bytes, each equal to the padding length. It appends in
// place when buf has the capacity.
func Pad(buf []byte, dataShards int) []byte {
	n := dataShards - len(buf)%dataShards
	for i := 0; i < n; i++ {
		buf = append(buf, byte(n))
	}
	return buf
}

// Unpad removes the padding added by Pad.
func Unpad(buf []byte, dataShards int) ([]byte, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("unpad: empty data")
	}
	n := int(buf[len(buf)-1])
	if n == 0 || n > dataShards || n > len(buf) {
		return nil, fmt.Errorf("unpad: invalid padding length %d for %d data shards", n, dataShards)
	}
	return buf[:len(buf)-n], nil
}

var encoders sync.Map // [2]int -> reedsolomon.Encoder

func encoder(data, parity int) (reedsolomon.Encoder, error) {
	k := [2]int{data, parity}
	if e, ok := encoders.Load(k); ok {
		return e.(reedsolomon.Encoder), nil
	}
	if data < 1 || data > 255 || parity < 0 || data+parity > 256 {
		return nil, fmt.Errorf("erasure code %d+%d is out of range", data, parity)
	}
	if parity == 0 {
		return nil, nil
	}
	e, err := reedsolomon.New(data, parity)
	if err != nil {
		return nil, fmt.Errorf("erasure code %d+%d: %w", data, parity, err)
	}
	encoders.Store(k, e)
	return e, nil
}

// Split pads buf and splits it into dataShards data shards followed by
// parity freshly computed parity shards. The data shards alias buf.
func Split(buf []byte, dataShards, parity int) ([][]byte, error) {
	enc, err := encoder(dataShards, parity)
	if err != nil {
		return nil, err
	}
	buf = Pad(buf, dataShards)
	size := len(buf) / dataShards
	shards := make([][]byte, dataShards+parity)
	for i := 0; i < dataShards; i++ {
		shards[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	if parity == 0 {
		return shards, nil
	}
	pbuf := make([]byte, parity*size)
	for i := 0; i < parity; i++ {
		shards[dataShards+i] = pbuf[i*size : (i+1)*size : (i+1)*size]
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("erasure encode: %w", err)
	}
	return shards, nil
}

// Join reconstructs the data from shards (nil = missing; at least dataShards
// must be present, all of equal length) and removes the padding. Missing
// data shards are rebuilt in place in shards.
func Join(shards [][]byte, dataShards, parity int) ([]byte, error) {
	if len(shards) != dataShards+parity {
		return nil, fmt.Errorf("erasure decode: %d shards given, want %d", len(shards), dataShards+parity)
	}
	present, size := 0, -1
	for _, s := range shards {
		if s == nil {
			continue
		}
		present++
		if size >= 0 && len(s) != size {
			return nil, fmt.Errorf("erasure decode: shards have different sizes %d and %d", size, len(s))
		}
		size = len(s)
	}
	if present < dataShards {
		return nil, fmt.Errorf("erasure decode: only %d of %d required shards available", present, dataShards)
	}
	missingData := false
	for i := 0; i < dataShards; i++ {
		if shards[i] == nil {
			missingData = true
		}
	}
	if missingData {
		enc, err := encoder(dataShards, parity)
		if err != nil {
			return nil, err
		}
		if err := enc.ReconstructData(shards); err != nil {
			return nil, fmt.Errorf("erasure reconstruct: %w", err)
		}
	}
	if contiguous(shards[:dataShards], size) {
		return Unpad(shards[0][:size*dataShards], dataShards)
	}
	out := make([]byte, 0, size*dataShards)
	for i := 0; i < dataShards; i++ {
		out = append(out, shards[i]...)
	}
	return Unpad(out, dataShards)
}

// Reconstruct rebuilds every missing shard (data and parity) in place.
func Reconstruct(shards [][]byte, dataShards, parity int) error {
	enc, err := encoder(dataShards, parity)
	if err != nil {
		return err
	}
	if enc == nil {
		for i, s := range shards {
			if s == nil {
				return fmt.Errorf("erasure reconstruct: shard %d missing and there is no parity", i)
			}
		}
		return nil
	}
	if err := enc.Reconstruct(shards); err != nil {
		return fmt.Errorf("erasure reconstruct: %w", err)
	}
	return nil
}

// contiguous reports whether the shards are consecutive slices of one
// backing array, so they can be joined without a copy.
func contiguous(shards [][]byte, size int) bool {
	if size == 0 || cap(shards[0]) < size*len(shards) {
		return false
	}
	all := shards[0][:size*len(shards)]
	for i, s := range shards {
		if &all[i*size] != &s[0] {
			return false
		}
	}
	return true
}

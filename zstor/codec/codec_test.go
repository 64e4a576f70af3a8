package codec

import (
	"bytes"
	"math/rand"
	"testing"
)

func TestSplitJoinRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, tc := range []struct{ size, k, m int }{
		{0, 1, 0}, {1, 2, 2}, {1000, 3, 2}, {4096, 16, 4}, {65537, 5, 3}, {10, 255, 1},
	} {
		data := make([]byte, tc.size)
		rng.Read(data)
		shards, err := Split(append([]byte{}, data...), tc.k, tc.m)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if len(shards) != tc.k+tc.m {
			t.Fatalf("%+v: %d shards", tc, len(shards))
		}
		for i := 0; i < tc.m; i++ { // lose m shards spread over data and parity
			shards[(i*7)%(tc.k+tc.m)] = nil
		}
		got, err := Join(shards, tc.k, tc.m)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%+v: join: %v (len %d)", tc, err, len(got))
		}
	}
}

func TestJoinTooFewShards(t *testing.T) {
	shards, err := Split([]byte("hello world"), 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	shards[0], shards[1] = nil, nil
	if _, err := Join(shards, 2, 1); err == nil {
		t.Fatal("join with 1 of 2 shards succeeded")
	}
}

func TestCompressRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for _, n := range []int{0, 1, FrameSize - 1, FrameSize, FrameSize + 1, 5*FrameSize + 17} {
		data := make([]byte, n)
		rng.Read(data[:n/2]) // half random, half zeros
		c := Compress(data)
		var out bytes.Buffer
		if _, err := Decompress(&out, c); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Errorf("n=%d: %v", n, err)
		}
		out.Reset()
		if _, err := DecodeFramed(&out, c); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Errorf("DecodeFramed n=%d: %v", n, err)
		}
	}
}

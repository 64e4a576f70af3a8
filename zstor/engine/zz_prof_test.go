package engine

import (
	"testing"

	"github.com/qsfs/qsfs/zstor/codec"
)

func BenchmarkEncodeRand(b *testing.B) {
	e := &Engine{Log: testLog()}
	key := make([]byte, 32)
	for i := 0; i < b.N; i++ {
		_, buf, _, err := e.EncodeFile("/tmp/qz/b/rand.bin", 4)
		if err != nil {
			b.Fatal(err)
		}
		blob, _ := codec.EncryptInPlace(key, buf)
		shards, _ := codec.Split(blob, 4, 2)
		e.shardSums(shards)
	}
}

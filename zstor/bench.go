package zstor

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
)

// benchEncode runs the store pipeline up to the shards (checksum, compress,
// encrypt, erasure code, shard checksums) without uploading, and prints
// "bytes seconds" for scripts/bench-zstor.sh.
func benchEncode(w io.Writer, cfg *config.Config, file string, log *logrus.Entry) error {
	eng, err := engine.New(cfg, log)
	if err != nil {
		return err
	}
	key, err := config.DecodeKey(cfg.Encryption.Key)
	if err != nil {
		return err
	}
	start := time.Now()
	shards, _, size, err := eng.EncodeShards(file, key, cfg.MinimalShards, cfg.DisposableShards())
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, s := range shards {
		wg.Add(1)
		go func() { defer wg.Done(); codec.Sum(s) }()
	}
	wg.Wait()
	fmt.Fprintf(w, "%d %.6f\n", size, time.Since(start).Seconds())
	return nil
}

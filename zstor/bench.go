package zstor

import (
	"fmt"
	"io"
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
	_, buf, size, err := eng.EncodeFile(file, cfg.MinimalShards)
	if err != nil {
		return err
	}
	blob, err := codec.EncryptInPlace(key, buf)
	if err != nil {
		return err
	}
	shards, err := codec.Split(blob, cfg.MinimalShards, cfg.DisposableShards())
	if err != nil {
		return err
	}
	for _, s := range shards {
		codec.Sum(s)
	}
	fmt.Fprintf(w, "%d %.6f\n", size, time.Since(start).Seconds())
	return nil
}

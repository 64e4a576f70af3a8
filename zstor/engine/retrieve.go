package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/qsfs/qsfs/zstor/backend"
	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/meta"
)

// Retrieve fetches the object stored for file and writes it to file (below
// root for relative paths), creating parent directories. The data is
// verified against the stored checksum before it replaces anything.
func (e *Engine) Retrieve(file string) (*meta.MetaData, error) {
	cfg, st, _ := e.snapshot()
	md, err := loadMeta(st, file, "retrieve")
	if err != nil {
		return nil, err
	}
	if md == nil {
		return nil, fmt.Errorf("retrieve %s: %w", file, ErrNotFound)
	}
	blob, err := e.fetchBlob(md)
	if err != nil {
		return nil, fmt.Errorf("retrieve %s: %w", file, err)
	}
	if err := writeObject(OutputPath(cfg, file), md, blob); err != nil {
		return nil, fmt.Errorf("retrieve %s: %w", file, err)
	}
	return md, nil
}

// writeObject decrypts and decompresses blob into a temporary file next to
// out, then renames it into place. Integrity comes from the per-shard
// checksums, the AES-GCM tag over the whole blob and the CRC-32C of every
// snappy chunk.
func writeObject(out string, md *meta.MetaData, blob []byte) error {
	key, err := hexKey(md.Key)
	if err != nil {
		return err
	}
	plain, err := codec.Decrypt(key, blob)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("create parent of %s: %w", out, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".zstor-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := codec.DecodeFramed(tmp, plain); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("rename into %s: %w", out, err)
	}
	return nil
}

// fetchShards reads the shards of md: data shards first, parity shards only
// as needed, all in parallel. Shards with a bad checksum count as missing.
// When all is true every shard is fetched. Data shards are read into one
// buffer and compacted so that joining them needs no copy.
func (e *Engine) fetchShards(md *meta.MetaData, all bool) ([][]byte, error) {
	n := md.DataShards + md.DisposableShards
	if len(md.Shards) != n {
		return nil, fmt.Errorf("metadata lists %d shards, want %d", len(md.Shards), n)
	}
	chunks := 0
	for _, s := range md.Shards[:md.DataShards] {
		chunks = max(chunks, len(s.Keys))
	}
	slot := chunks * backend.MaxChunk
	region := make([]byte, md.DataShards*slot)
	shards := make([][]byte, n)
	errs := make([]error, n)
	fetch := func(idxs []int) {
		var wg sync.WaitGroup
		for _, i := range idxs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var dst []byte
				if i < md.DataShards {
					dst = region[i*slot : i*slot : (i+1)*slot]
				}
				shards[i], errs[i] = e.readShard(md.Shards[i], dst)
			}()
		}
		wg.Wait()
	}
	// First round: data shards on healthy backends, topped up with
	// parity shards on healthy backends; shards on backends the monitor
	// saw down come last.
	var order []int
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < n; i++ {
			if e.healthy(md.Shards[i].Backend) == (pass == 0) {
				order = append(order, i)
			}
		}
	}
	var first []int
	if all {
		first = order
	} else {
		first = order[:md.DataShards]
	}
	fetch(first)
	next := len(first)
	for {
		have := 0
		for _, s := range shards {
			if s != nil {
				have++
			}
		}
		if have >= md.DataShards || next >= n {
			if have < md.DataShards {
				var lastErr error
				for _, err := range errs {
					if err != nil {
						lastErr = err
					}
				}
				return nil, fmt.Errorf("%w: %d of %d required shards readable (last error: %v)", errTooFew, have, md.DataShards, lastErr)
			}
			break
		}
		var more []int
		for ; next < n && len(more) < md.DataShards-have; next++ {
			more = append(more, order[next])
		}
		fetch(more)
	}
	// Compact the data shards to consecutive positions (memmove, no
	// allocation) when they are all present and of equal size.
	size := -1
	for _, s := range shards {
		if s != nil {
			size = len(s)
			break
		}
	}
	for i := 0; i < md.DataShards; i++ {
		if shards[i] == nil || len(shards[i]) != size {
			return shards, nil
		}
	}
	for i := 0; i < md.DataShards; i++ {
		copy(region[i*size:(i+1)*size], shards[i])
		shards[i] = region[i*size : (i+1)*size] // full capacity: codec.Join sees them contiguous
	}
	return shards, nil
}

func (e *Engine) fetchBlob(md *meta.MetaData) ([]byte, error) {
	shards, err := e.fetchShards(md, false)
	if err != nil {
		return nil, err
	}
	return codec.Join(shards, md.DataShards, md.DisposableShards)
}

func (e *Engine) readShard(si meta.ShardInfo, dst []byte) ([]byte, error) {
	keys := make([][]byte, len(si.Keys))
	for i, k := range si.Keys {
		keys[i] = k.Bytes()
	}
	var data []byte
	err := e.Pool.Do(si.Backend, backend.Sequential, func(c *backend.Conn) error {
		var err error
		data, err = c.ReadShard(keys, dst[:0])
		return err
	})
	if err != nil {
		return nil, err
	}
	if codec.Sum(data) != si.Checksum {
		return nil, fmt.Errorf("shard %d on %s: checksum mismatch", si.Index, meta.BackendID(si.Backend))
	}
	return data, nil
}

// Check returns the stored checksum of file, or nil when nothing is stored.
func (e *Engine) Check(file string) (*codec.Checksum, error) {
	_, st, _ := e.snapshot()
	md, err := loadMeta(st, file, "check")
	if err != nil {
		return nil, err
	}
	if md == nil {
		return nil, nil
	}
	return &md.Checksum, nil
}

// loadMeta returns the metadata stored for file, or nil when there is none.
// op names the command in errors.
func loadMeta(st *meta.Store, file, op string) (*meta.MetaData, error) {
	p, err := LookupPath(file)
	if err != nil {
		return nil, err
	}
	mkey, err := st.KeyFor(p)
	if err != nil {
		return nil, err
	}
	md, err := st.Load(mkey)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, file, err)
	}
	return md, nil
}

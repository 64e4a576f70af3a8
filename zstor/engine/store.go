package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/qsfs/qsfs/zstor/backend"
	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/meta"
)

const readBlock = 4 << 20 // a multiple of codec.FrameSize

// StoreResult describes a finished store.
type StoreResult struct {
	Path     string // the path the metadata key was derived from
	Key      string // metadata key
	Checksum codec.Checksum
	Size     int64 // bytes of the original file
	Skipped  bool  // the stored checksum already matched
}

// encodeFileAsync reads path and returns the snappy-framed data in a
// buffer laid out for in-place encryption (NonceSize bytes reserved in
// front, room for tag and padding behind) as soon as it is complete.
// Reading and compressing (on the engine's workers) overlap; the BLAKE2b-128
// of the file (a single sequential stream, the slowest stage) arrives on
// the channel, so encryption and erasure coding overlap it too.
func (e *Engine) encodeFileAsync(path string, dataShards int) ([]byte, int64, <-chan codec.Checksum, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, 0, nil, fmt.Errorf("store %s: only regular files can be stored", path)
	}
	size := st.Size()
	out := make([]byte, codec.NonceSize, codec.NonceSize+codec.MaxFramedLen(int(size))+codec.TagSize+dataShards)
	fc := codec.NewFrameCompressor(e.workers())
	// Blocks go to the hasher in order; a small pool bounds memory.
	const inflight = 4
	pool := make(chan []byte, inflight)
	for i := 0; i < inflight; i++ {
		pool <- make([]byte, readBlock)
	}
	blocks := make(chan []byte, inflight)
	sumCh := make(chan codec.Checksum, 1)
	go func() {
		h := codec.NewHash()
		for b := range blocks {
			h.Write(b)
			pool <- b[:cap(b)]
		}
		var sum codec.Checksum
		h.Sum(sum[:0])
		sumCh <- sum
	}()
	var total int64
	for {
		buf := <-pool
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			out = fc.Append(out, buf[:n])
			total += int64(n)
			blocks <- buf[:n]
		} else {
			pool <- buf
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			close(blocks)
			<-sumCh
			return nil, 0, nil, fmt.Errorf("read %s: %w", path, rerr)
		}
	}
	close(blocks)
	return out, total, sumCh, nil
}

// EncodeShards runs the store pipeline on file up to the shards: checksum,
// compression, encryption with key and erasure coding into k+m shards.
// The sequential checksum overlaps encryption and erasure coding.
func (e *Engine) EncodeShards(file string, key []byte, k, m int) ([][]byte, codec.Checksum, int64, error) {
	var sum codec.Checksum
	buf, size, sumCh, err := e.encodeFileAsync(file, k)
	if err != nil {
		return nil, sum, 0, err
	}
	blob, err := codec.EncryptInPlace(key, buf)
	if err != nil {
		<-sumCh
		return nil, sum, 0, err
	}
	shards, err := codec.Split(blob, k, m)
	sum = <-sumCh
	if err != nil {
		return nil, sum, 0, err
	}
	return shards, sum, size, nil
}

// Store archives file. keyDir, when set, hashes the key as if the file lived
// in that directory. An unchanged file (same checksum as stored) is not
// uploaded again.
func (e *Engine) Store(file, keyDir string) (*StoreResult, error) {
	cfg, st, key := e.snapshot()
	objPath, err := StorePath(file, keyDir)
	if err != nil {
		return nil, err
	}
	mkey, err := st.KeyFor(objPath)
	if err != nil {
		return nil, err
	}
	res := &StoreResult{Path: objPath, Key: mkey}

	type loaded struct {
		md  *meta.MetaData
		err error
	}
	old := make(chan loaded, 1)
	go func() { md, err := st.Load(mkey); old <- loaded{md, err} }()

	start := time.Now()
	k, m := cfg.MinimalShards, cfg.DisposableShards()
	shards, sum, size, err := e.EncodeShards(file, key, k, m)
	prev := <-old
	if err != nil {
		return nil, err
	}
	res.Checksum, res.Size = sum, size
	if prev.err != nil {
		return nil, fmt.Errorf("store %s: load existing metadata: %w", file, prev.err)
	}
	if prev.md != nil && prev.md.Checksum == sum {
		res.Skipped = true
		return res, nil
	}
	infos, err := e.placeAndWrite(cfg, shards, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", file, err)
	}
	md := &meta.MetaData{DataShards: k, DisposableShards: m, Key: cfg.Encryption.Key, Shards: infos, Checksum: sum}
	if err := st.Save(mkey, md); err != nil {
		return nil, fmt.Errorf("store %s: save metadata: %w", file, err)
	}
	e.Log.WithFields(map[string]any{"file": file, "bytes": size, "shard_bytes": len(shards[0]), "seconds": time.Since(start).Seconds()}).Debug("stored")
	return res, nil
}

// upload erasure codes the encrypted blob with cfg and writes the shards to
// backends chosen by the placement rules, skipping unreachable or full
// backends. It returns metadata without the file checksum.
func (e *Engine) upload(cfg *config.Config, blob []byte, hexKey string) (*meta.MetaData, error) {
	k, m := cfg.MinimalShards, cfg.DisposableShards()
	shards, err := codec.Split(blob, k, m)
	if err != nil {
		return nil, err
	}
	infos, err := e.placeAndWrite(cfg, shards, nil, nil)
	if err != nil {
		return nil, err
	}
	return &meta.MetaData{DataShards: k, DisposableShards: m, Key: hexKey, Shards: infos}, nil
}

// placeAndWrite writes shards[i] for every i not already in keep (keep[i]
// is an existing ShardInfo to reuse) on backends satisfying the placement
// policy. Failed backends are excluded and placement is retried. With nil
// sums, each shard's checksum is computed while it is being sent.
func (e *Engine) placeAndWrite(cfg *config.Config, shards [][]byte, sums []codec.Checksum, keep []*meta.ShardInfo) ([]meta.ShardInfo, error) {
	excluded := map[string]bool{}
	pol := backend.PlacementOf(cfg)
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		var groups [][]config.Backend
		for _, g := range cfg.Groups {
			var gb []config.Backend
			for _, b := range g.Backends {
				if !excluded[meta.BackendID(b)] && e.writable(b) {
					gb = append(gb, b)
				}
			}
			groups = append(groups, gb)
		}
		chosen, err := choose(pol, groups, keep)
		if err != nil {
			if lastErr != nil {
				return nil, fmt.Errorf("%w (last backend error: %v)", err, lastErr)
			}
			return nil, err
		}
		infos := make([]meta.ShardInfo, len(shards))
		errs := make([]error, len(shards))
		var wg sync.WaitGroup
		for i := range shards {
			if keep != nil && keep[i] != nil {
				infos[i] = *keep[i]
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids, sum, err := e.writeShard(chosen[i], shards[i], sums == nil)
				if err != nil {
					errs[i] = err
					return
				}
				if sums != nil {
					sum = sums[i]
				}
				keys := make([]meta.Key, len(ids))
				for j, id := range ids {
					keys[j] = meta.Key{ID: id}
				}
				infos[i] = meta.ShardInfo{Index: i, Checksum: sum, Keys: keys, Backend: chosen[i]}
			}()
		}
		wg.Wait()
		failed := false
		for i, err := range errs {
			if err != nil {
				failed = true
				lastErr = err
				excluded[meta.BackendID(chosen[i])] = true
				e.Pool.Forget(chosen[i])
				e.Log.WithFields(map[string]any{"backend": meta.BackendID(chosen[i]), "error": err}).Warn("shard write failed, choosing another backend")
			}
		}
		if !failed {
			return infos, nil
		}
		// Shards written so far are kept only if placement can keep them.
		if keep == nil {
			keep = make([]*meta.ShardInfo, len(shards))
		}
		for i := range infos {
			if errs[i] == nil && infos[i].Keys != nil && keep[i] == nil {
				si := infos[i]
				keep[i] = &si
			}
		}
	}
	return nil, fmt.Errorf("too many backend failures: %w", lastErr)
}

// choose returns one backend per shard: shards in keep stay where they are
// when the placement allows it; the others get the remaining backends of a
// valid distribution.
func choose(pol backend.Placement, groups [][]config.Backend, keep []*meta.ShardInfo) ([]config.Backend, error) {
	var best []config.Backend
	bestOverlap := -1
	for try := 0; try < 64; try++ {
		set, err := pol.Choose(groups)
		if err != nil {
			return nil, err
		}
		out := make([]config.Backend, pol.Expected)
		used := make([]bool, len(set))
		overlap := 0
		for i := range out {
			if keep == nil || i >= len(keep) || keep[i] == nil {
				continue
			}
			for j, b := range set {
				if !used[j] && meta.SameBackend(b, keep[i].Backend) {
					used[j] = true
					out[i] = b
					overlap++
					break
				}
			}
		}
		kept := 0
		for _, k := range keep {
			if k != nil {
				kept++
			}
		}
		j := 0
		for i := range out {
			if out[i].Address != "" {
				continue
			}
			for used[j] {
				j++
			}
			used[j] = true
			out[i] = set[j]
		}
		if overlap > bestOverlap {
			best, bestOverlap = out, overlap
		}
		if overlap == kept {
			break
		}
	}
	// A kept shard whose backend is not in the chosen set must be
	// rewritten: drop it from keep.
	for i := range keep {
		if keep[i] != nil && !meta.SameBackend(best[i], keep[i].Backend) {
			keep[i] = nil
		}
	}
	return best, nil
}

// writeShard writes one shard to b after checking it has space, and
// returns its ids and, when sum is true, its checksum computed while the
// chunks were sent.
func (e *Engine) writeShard(b config.Backend, data []byte, sum bool) ([]uint64, codec.Checksum, error) {
	var ids []uint64
	var cs codec.Checksum
	err := e.Pool.Do(b, backend.Sequential, func(c *backend.Conn) error {
		info, err := c.NSInfo()
		if err != nil {
			return err
		}
		if free := backend.FreeSpace(info); free >= 0 && free < int64(len(data)) {
			return fmt.Errorf("backend %s: no space left (%d bytes free, shard of %d)", b.Address, free, len(data))
		}
		var onChunk func([]byte)
		h := codec.NewHash() // per attempt: a retried attempt starts over
		if sum {
			onChunk = func(p []byte) { h.Write(p) }
		}
		if ids, err = c.WriteShard(data, onChunk); err != nil {
			return err
		}
		if sum {
			h.Sum(cs[:0])
		}
		return nil
	})
	return ids, cs, err
}

var errTooFew = errors.New("not enough shards")

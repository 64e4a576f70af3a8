package engine

import (
	"encoding/hex"
	"fmt"

	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/meta"
)

func hexKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(s)
	if err != nil || len(k) != codec.KeySize {
		return nil, fmt.Errorf("metadata encryption key is not 64 hex characters")
	}
	return k, nil
}

// Rebuild re-establishes full redundancy for one object, named by file path
// or by metadata key (exactly one), with md as already-loaded metadata when
// known. Shards still readable on a backend of the current configuration
// stay where they are; missing ones are recomputed and written to other
// backends per the placement rules; the metadata is replaced. With a
// different shard count in the current configuration all shards are
// rewritten.
func (e *Engine) Rebuild(file, key string, md *meta.MetaData) error {
	cfg, st, _ := e.snapshot()
	if (file == "") == (key == "") {
		return fmt.Errorf("rebuild: give exactly one of file or key")
	}
	if file != "" {
		p, err := LookupPath(file)
		if err != nil {
			return err
		}
		if key, err = st.KeyFor(p); err != nil {
			return err
		}
	}
	if md == nil {
		var err error
		if md, err = st.Load(key); err != nil {
			return fmt.Errorf("rebuild %s: %w", key, err)
		}
		if md == nil {
			return fmt.Errorf("rebuild %s: %w", key, ErrNotFound)
		}
	}
	shards, err := e.fetchShards(md, true)
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", key, err)
	}
	var infos []meta.ShardInfo
	k, m := cfg.MinimalShards, cfg.DisposableShards()
	if k == md.DataShards && m == md.DisposableShards {
		keep := make([]*meta.ShardInfo, len(shards))
		missing := 0
		for i, s := range shards {
			if s != nil && inConfig(cfg, md.Shards[i].Backend) && e.writable(md.Shards[i].Backend) {
				si := md.Shards[i]
				keep[i] = &si
			} else {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if err := codec.Reconstruct(shards, k, m); err != nil {
			return fmt.Errorf("rebuild %s: %w", key, err)
		}
		sums := make([]codec.Checksum, len(shards))
		for i := range shards {
			sums[i] = md.Shards[i].Checksum
		}
		if infos, err = e.placeAndWrite(cfg, shards, sums, keep); err != nil {
			return fmt.Errorf("rebuild %s: %w", key, err)
		}
		e.Log.WithFields(map[string]any{"key": key, "rewritten": missing}).Info("rebuilt object")
	} else {
		blob, err := codec.Join(shards, md.DataShards, md.DisposableShards)
		if err != nil {
			return fmt.Errorf("rebuild %s: %w", key, err)
		}
		nmd, err := e.upload(cfg, blob, md.Key)
		if err != nil {
			return fmt.Errorf("rebuild %s: %w", key, err)
		}
		infos = nmd.Shards
		e.Log.WithFields(map[string]any{"key": key, "shards": fmt.Sprintf("%d+%d", k, m)}).Info("re-encoded object")
	}
	nmd := &meta.MetaData{DataShards: k, DisposableShards: m, Checksum: md.Checksum, Key: md.Key, Shards: infos}
	if err := st.Save(key, nmd); err != nil {
		return fmt.Errorf("rebuild %s: save metadata: %w", key, err)
	}
	return nil
}

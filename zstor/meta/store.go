package meta

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/qsfs/qsfs/zstor/backend"
	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/config"
)

// Metadata store erasure code: fixed 2 data + 2 parity shards, one per
// metadata backend.
const (
	metaData   = 2
	metaParity = 2
)

// ErrNotWritable is returned when a metadata write cannot reach all 4
// backends ("Metastore is not writable").
var ErrNotWritable = errors.New("metastore is not writable")

// Store is the zdb metadata store over the 4 user-key metadata backends.
// Safe for concurrent use.
type Store struct {
	Backends []config.Backend
	Prefix   string
	Root     string
	key      []byte
	pool     *backend.Pool
}

// NewStore builds the store of cfg. Values are encrypted with the top-level
// encryption key, as the official zstor does.
func NewStore(cfg *config.Config, pool *backend.Pool) (*Store, error) {
	key, err := config.DecodeKey(cfg.Encryption.Key)
	if err != nil {
		return nil, fmt.Errorf("encryption.key: %w", err)
	}
	if len(cfg.Meta.Config.Backends) != config.MetaBackends {
		return nil, fmt.Errorf("meta.config.backends: %d backends, want %d", len(cfg.Meta.Config.Backends), config.MetaBackends)
	}
	return &Store{Backends: cfg.Meta.Config.Backends, Prefix: cfg.Meta.Config.Prefix, Root: cfg.Root, key: key, pool: pool}, nil
}

// KeyFor returns the metadata key of a stored file path. A path that is
// not lexically under root is also tried against root with symlinks
// resolved (stored paths have their directory canonicalized).
func (s *Store) KeyFor(path string) (string, error) {
	k, err := ObjectKey(s.Prefix, path, s.Root)
	if err != nil && s.Root != "" {
		if real, rerr := filepath.EvalSymlinks(s.Root); rerr == nil && real != s.Root {
			if k2, err2 := ObjectKey(s.Prefix, path, real); err2 == nil {
				return k2, nil
			}
		}
	}
	return k, err
}

func (s *Store) each(fn func(i int, c *backend.Conn) error) []error {
	errs := make([]error, len(s.Backends))
	var wg sync.WaitGroup
	for i, b := range s.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.pool.Do(b, backend.UserKey, func(c *backend.Conn) error { return fn(i, c) })
		}()
	}
	wg.Wait()
	return errs
}

// EncodeValue returns the 4 values written for plain: encrypted, split 2+2,
// each `[i] ‖ shard ‖ b2(shard)`.
func EncodeValue(key, plain []byte) ([][]byte, error) {
	enc, err := codec.Encrypt(key, plain)
	if err != nil {
		return nil, err
	}
	return splitValue(enc)
}

// splitValue erasure codes an encrypted value into the 4 stored values.
// It is deterministic: the same encrypted value gives the same shards.
func splitValue(enc []byte) ([][]byte, error) {
	shards, err := codec.Split(enc, metaData, metaParity)
	if err != nil {
		return nil, err
	}
	vals := make([][]byte, len(shards))
	for i, sh := range shards {
		sum := codec.Sum(sh)
		v := make([]byte, 0, 1+len(sh)+len(sum))
		v = append(v, byte(i))
		v = append(v, sh...)
		vals[i] = append(v, sum[:]...)
	}
	return vals, nil
}

// joinValue rebuilds the encrypted value from stored values (nil =
// missing); nil, nil when none exists.
func joinValue(vals [][]byte) ([]byte, error) {
	shards := make([][]byte, metaData+metaParity)
	found, valid := 0, 0
	for _, v := range vals {
		if len(v) == 0 {
			continue
		}
		found++
		idx := int(v[0])
		if idx >= len(shards) || len(v) < 1+codec.ChecksumSize {
			continue
		}
		sh := v[1 : len(v)-codec.ChecksumSize]
		if codec.Sum(sh) != codec.Checksum(v[len(v)-codec.ChecksumSize:]) {
			continue
		}
		if shards[idx] == nil {
			valid++
		}
		shards[idx] = append([]byte(nil), sh...)
	}
	if found == 0 {
		return nil, nil
	}
	if valid < metaData {
		return nil, fmt.Errorf("metadata value is corrupt: need at least %d valid shards, only %d available", metaData, valid)
	}
	return codec.Join(shards, metaData, metaParity)
}

// DecodeValue reverses EncodeValue from the values read (nil = missing).
// It returns nil, nil when no value exists at all.
func DecodeValue(key []byte, vals [][]byte) ([]byte, error) {
	enc, err := joinValue(vals)
	if err != nil || enc == nil {
		return nil, err
	}
	return codec.Decrypt(key, enc)
}

// Set writes a raw value under key on all 4 backends.
func (s *Store) Set(key string, plain []byte) error {
	vals, err := EncodeValue(s.key, plain)
	if err != nil {
		return err
	}
	errs := s.each(func(i int, c *backend.Conn) error { return c.Set([]byte(key), vals[i]) })
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%w: metadata backend %s: %w", ErrNotWritable, s.Backends[i].Address, err)
		}
	}
	return nil
}

// Get reads a raw value; nil, nil when the key does not exist. It returns
// as soon as 2 valid shards decode and authenticate, so one slow or dead
// metadata backend does not delay reads.
func (s *Store) Get(key string) ([]byte, error) {
	type result struct {
		i   int
		v   []byte
		err error
	}
	ch := make(chan result, len(s.Backends))
	for i, b := range s.Backends {
		go func() {
			var v []byte
			err := s.pool.Do(b, backend.UserKey, func(c *backend.Conn) error {
				var err error
				v, err = c.Get([]byte(key))
				return err
			})
			ch <- result{i, v, err}
		}()
	}
	vals := make([][]byte, len(s.Backends))
	failed, present := 0, 0
	var last, decodeErr error
	for n := 0; n < len(s.Backends); n++ {
		r := <-ch
		if r.err != nil {
			failed++
			last = r.err
			continue
		}
		if r.v == nil {
			continue
		}
		vals[r.i] = r.v
		present++
		if present >= metaData {
			v, err := DecodeValue(s.key, vals)
			if err == nil && v != nil {
				return v, nil
			}
			decodeErr = err
		}
	}
	if failed > metaParity {
		return nil, fmt.Errorf("metadata read %s: %d of %d backends failed: %w", key, failed, len(s.Backends), last)
	}
	if present == 0 {
		return nil, nil
	}
	if decodeErr == nil {
		decodeErr = fmt.Errorf("only %d shard(s) found", present)
	}
	return nil, fmt.Errorf("metadata read %s: %w", key, decodeErr)
}

// Delete removes key from all backends.
func (s *Store) Delete(key string) error {
	errs := s.each(func(i int, c *backend.Conn) error { return c.Del([]byte(key)) })
	return errors.Join(errs...)
}

// Save stores m under key.
func (s *Store) Save(key string, m *MetaData) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return s.Set(key, b)
}

// Load returns the metadata under key, or nil, nil.
func (s *Store) Load(key string) (*MetaData, error) {
	b, err := s.Get(key)
	if err != nil || b == nil {
		return nil, err
	}
	m, err := Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", key, err)
	}
	return m, nil
}

// Keys calls fn for every key starting with prefix, scanning the reachable
// metadata backend with the most entries.
func (s *Store) Keys(prefix string, fn func(key string) error) error {
	best, bestN := -1, int64(-1)
	entries := make([]int64, len(s.Backends))
	errs := s.each(func(i int, c *backend.Conn) error {
		info, err := c.NSInfo()
		if err != nil {
			return err
		}
		fmt.Sscan(info["entries"], &entries[i])
		return nil
	})
	for i, e := range errs {
		if e == nil && entries[i] > bestN {
			best, bestN = i, entries[i]
		}
	}
	if best < 0 {
		return fmt.Errorf("no healthy metadata backend to list keys: %w", errors.Join(errs...))
	}
	c, err := s.pool.Get(s.Backends[best], backend.UserKey)
	if err != nil {
		return err
	}
	defer s.pool.Put(c, backend.UserKey)
	var cursor []byte
	for {
		batch, next, done, err := c.Scan(cursor)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		for _, e := range batch {
			if k := string(e.Key); strings.HasPrefix(k, prefix) {
				if err := fn(k); err != nil {
					return err
				}
			}
		}
		cursor = next
	}
}

// RebuildKey gives the backends of s that old does not have at the same
// position their shard of key, computed from old's shards without
// re-encrypting, so it matches the shards the other backends hold (the
// official sparse rebuild). Keys without a value are skipped.
func (s *Store) RebuildKey(old *Store, key string) error {
	var missing []int
	for i, b := range s.Backends {
		if i >= len(old.Backends) || !SameBackend(b, old.Backends[i]) {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	vals := make([][]byte, len(old.Backends))
	old.each(func(i int, c *backend.Conn) error {
		v, err := c.Get([]byte(key))
		vals[i] = v
		return err
	})
	enc, err := joinValue(vals)
	if err != nil || enc == nil {
		return err
	}
	if _, err := codec.Decrypt(s.key, append([]byte(nil), enc...)); err != nil {
		return fmt.Errorf("metadata %s: %w", key, err)
	}
	nv, err := splitValue(enc)
	if err != nil {
		return err
	}
	var errs []error
	for _, i := range missing {
		b := s.Backends[i]
		errs = append(errs, s.pool.Do(b, backend.UserKey, func(c *backend.Conn) error { return c.Set([]byte(key), nv[i]) }))
	}
	return errors.Join(errs...)
}

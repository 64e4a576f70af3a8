package zstor

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/meta"
)

// removedBackends lists data backends of old that are not in cur.
func removedBackends(old, cur *config.Config) []config.Backend {
	var out []config.Backend
	for _, b := range old.Backends() {
		found := false
		for _, c := range cur.Backends() {
			if meta.SameBackend(b, c) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, b)
		}
	}
	return out
}

// sweep is the repair loop: every object with a shard on a backend that
// left the config, or that is down and does not answer a fresh connect, is
// rebuilt. One sweep at a time.
func (d *daemon) sweep() {
	if !d.repairMu.TryLock() {
		return
	}
	defer d.repairMu.Unlock()
	start := time.Now()
	st := d.eng.Meta()
	cfg := d.eng.Config()
	probed := map[string]bool{}
	alive := func(b config.Backend) bool {
		if d.health.Healthy(b) {
			return true
		}
		id := meta.BackendID(b)
		if ok, seen := probed[id]; seen {
			return ok
		}
		_, err := engine.Probe(b, "", probeTimeout)
		probed[id] = err == nil
		return err == nil
	}
	var keys []string
	if err := st.Keys(meta.MetaPrefix(st.Prefix), func(k string) error { keys = append(keys, k); return nil }); err != nil {
		d.log.WithError(err).Warn("repair sweep: cannot list metadata")
		return
	}
	checked, repaired, failed := 0, 0, 0
	for _, k := range keys {
		select {
		case <-d.stop:
			return
		default:
		}
		md, err := st.Load(k)
		if err != nil || md == nil {
			continue
		}
		checked++
		need := false
		for _, s := range md.Shards {
			if !d.eng.InConfig(cfg, s.Backend) || !alive(s.Backend) {
				need = true
				break
			}
		}
		if !need {
			continue
		}
		err = d.eng.Rebuild("", k, md)
		observe(metricRebuild, err)
		if err != nil {
			failed++
			d.log.WithError(err).WithField("key", k).Warn("repair failed")
		} else {
			repaired++
		}
	}
	d.log.WithFields(logrus.Fields{"objects": checked, "repaired": repaired, "failed": failed, "seconds": time.Since(start).Seconds()}).Info("repair sweep done")
}

// evict keeps zdb_data_dir_path under max_zdb_data_dir_size MiB: regular
// data files (d<N>) directly in the directory, oldest access first, never
// the active (highest) one, and only files whose stored checksum equals the
// local one.
func (d *daemon) evict() {
	cfg := d.eng.Config()
	if cfg.ZdbDataDirPath == "" || cfg.MaxZdbDataDirSize == 0 {
		return
	}
	limit := int64(cfg.MaxZdbDataDirSize) << 20
	n, err := evictDir(d.eng, cfg.ZdbDataDirPath, limit, &d.verified, d.log)
	if err != nil {
		d.log.WithError(err).Warn("eviction failed")
	}
	if n > 0 {
		d.log.WithFields(logrus.Fields{"dir": cfg.ZdbDataDirPath, "evicted": n}).Info("evicted stored data files")
	}
}

type dataFile struct {
	path  string
	id    int
	size  int64
	atime time.Time
	mtime time.Time
}

// evictCache remembers files whose stored checksum matched, by path, size
// and modification time, so a full directory is not re-hashed every pass.
type evictCache struct {
	mu sync.Mutex
	ok map[string]string
}

func (c *evictCache) key(f dataFile, mtime time.Time) string {
	return fmt.Sprintf("%d/%d", f.size, mtime.UnixNano())
}

func (c *evictCache) has(path, k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok[path] == k
}

func (c *evictCache) put(path, k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok == nil {
		c.ok = map[string]string{}
	}
	c.ok[path] = k
}

func (c *evictCache) drop(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.ok, path)
}

func evictDir(eng *engine.Engine, dir string, limit int64, cache *evictCache, log *logrus.Entry) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var files []dataFile
	var total int64
	active := -1
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		total += info.Size()
		if !strings.HasPrefix(e.Name(), "d") {
			continue
		}
		id, err := strconv.Atoi(e.Name()[1:])
		if err != nil {
			continue
		}
		at := info.ModTime()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			at = time.Unix(st.Atim.Sec, st.Atim.Nsec)
		}
		files = append(files, dataFile{path: filepath.Join(dir, e.Name()), id: id, size: info.Size(), atime: at, mtime: info.ModTime()})
		active = max(active, id)
	}
	if total < limit {
		return 0, nil
	}
	sort.Slice(files, func(i, j int) bool { return files[i].atime.Before(files[j].atime) })
	evicted := 0
	for _, f := range files {
		if total < limit {
			break
		}
		if f.id == active {
			continue
		}
		ck := cache.key(f, f.mtime)
		if !cache.has(f.path, ck) {
			stored, err := eng.Check(f.path)
			if err != nil || stored == nil {
				continue
			}
			sum, err := engine.FileChecksum(f.path)
			if err != nil || sum != *stored {
				continue
			}
			cache.put(f.path, ck)
		}
		cache.drop(f.path)
		if err := os.Remove(f.path); err != nil {
			log.WithError(err).WithField("file", f.path).Warn("evict failed")
			continue
		}
		total -= f.size
		evicted++
	}
	return evicted, nil
}

func sameBackends(a, b []config.Backend) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !meta.SameBackend(a[i], b[i]) {
			return false
		}
	}
	return true
}

// rebuildMeta gives new metadata backends their shard of every key after
// the metadata backends changed (official rebuild_cluster), then starts a
// repair sweep.
func (d *daemon) rebuildMeta(old, cur *meta.Store) {
	d.repairMu.Lock()
	defer d.repairMu.Unlock()
	start := time.Now()
	var keys []string
	if err := old.Keys("/"+old.Prefix+"/", func(k string) error { keys = append(keys, k); return nil }); err != nil {
		d.log.WithError(err).Error("metadata cluster rebuild: cannot list the old cluster")
		return
	}
	copied, failed := 0, 0
	for _, k := range keys {
		if err := cur.RebuildKey(old, k); err != nil {
			failed++
			d.log.WithError(err).WithField("key", k).Warn("metadata cluster rebuild: key not copied")
			continue
		}
		copied++
	}
	d.log.WithFields(logrus.Fields{"keys": copied, "failed": failed, "seconds": time.Since(start).Seconds()}).Info("metadata cluster rebuilt")
}

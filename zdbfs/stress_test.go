package zdbfs

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestConcurrentStress runs writers, readers, renamers and listers at once,
// then checks every file against what was written, before and after a
// remount. It catches deadlocks and lost updates under concurrency.
func TestConcurrentStress(t *testing.T) {
	s := newStack(t)
	s.mount("cachesize=16") // a small cache forces eviction and write-back
	const workers, files = 4, 40
	var mu sync.Mutex
	want := map[string][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	run := 3 * time.Second
	if v, err := time.ParseDuration(os.Getenv("QSFS_ZDBFS_STRESS")); err == nil {
		run = v // e.g. QSFS_ZDBFS_STRESS=60s for a longer soak
	}
	stop := time.Now().Add(run)
	for w := 0; w < workers; w++ {
		dir := filepath.Join(s.mnt, fmt.Sprintf("w%d", w))
		must(t, os.Mkdir(dir, 0o755))
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for i := 0; time.Now().Before(stop); i++ {
				name := filepath.Join(dir, fmt.Sprintf("f%d", r.Intn(files)))
				mu.Lock()
				cur, ok := want[name]
				mu.Unlock()
				switch op := r.Intn(5); {
				case op < 2 || !ok: // rewrite with random size across blocks
					data := make([]byte, r.Intn(3*blockSize))
					r.Read(data)
					if err := os.WriteFile(name, data, 0o644); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					want[name] = data
					mu.Unlock()
				case op == 2: // patch in place
					off := r.Intn(len(cur) + 1)
					patch := make([]byte, r.Intn(blockSize/2))
					r.Read(patch)
					f, err := os.OpenFile(name, os.O_WRONLY, 0)
					if err == nil {
						_, err = f.WriteAt(patch, int64(off))
						f.Close()
					}
					if err != nil {
						errs <- err
						return
					}
					next := append([]byte(nil), cur...)
					if end := off + len(patch); end > len(next) {
						next = append(next, make([]byte, end-len(next))...)
					}
					copy(next[off:], patch)
					mu.Lock()
					want[name] = next
					mu.Unlock()
				case op == 3: // read and compare
					got, err := os.ReadFile(name)
					if err != nil || !bytes.Equal(got, cur) {
						errs <- fmt.Errorf("%s: read %d bytes (%v), want %d", name, len(got), err, len(cur))
						return
					}
				case r.Intn(4) == 0: // unlink and recreate through a hard link
					link := filepath.Join(s.mnt, fmt.Sprintf("link-%d-%d", w, i))
					if err := os.Link(name, link); err != nil {
						errs <- err
						return
					}
					if err := os.Remove(name); err != nil {
						errs <- err
						return
					}
					if err := os.Rename(link, name); err != nil {
						errs <- err
						return
					}
				default: // rename away and back through another directory
					tmp := filepath.Join(s.mnt, fmt.Sprintf("tmp-%d-%d", w, i))
					if err := os.Rename(name, tmp); err != nil {
						errs <- err
						return
					}
					if err := os.Rename(tmp, name); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) {
			if _, err := os.ReadDir(s.mnt); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	check := func() {
		for name, data := range want {
			got, err := os.ReadFile(name)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: %d bytes (%v), want %d", name, len(got), err, len(data))
			}
		}
	}
	check()
	s.unmount()
	s.mount()
	check()
}

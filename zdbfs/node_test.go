package zdbfs

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// inMemory reports whether ino has a node in the table.
func (f *testFS) inMemory(ino uint64) bool {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	return f.nodes[ino] != nil
}

// TestForgetDropsCleanNodes checks that a node the kernel forgets leaves
// memory, with its cached blocks, once it is written back, that it is
// loaded again from zdb on its next lookup with the same attributes and
// data, and that a node with unwritten changes or an open handle stays.
func TestForgetDropsCleanNodes(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	const files = 50
	data := fill(300<<10, 7) // three blocks
	inos := make([]uint64, files)
	for i := range inos {
		inos[i] = f.create(fmt.Sprintf("f%d", i))
		if i%10 == 0 {
			must(t, f.write(inos[i], 0, data))
		}
		f.Release(nil, &fuse.ReleaseIn{InHeader: hdr(inos[i]), Fh: inos[i]})
	}
	// forgotten before the write-back: nothing may be dropped
	for _, ino := range inos {
		f.Forget(ino, 1)
	}
	for _, ino := range inos {
		if !f.inMemory(ino) {
			t.Fatalf("inode %d was dropped before it was written back", ino)
		}
	}
	f.sync()
	// looked up and forgotten again once clean: dropped
	for i, ino := range inos {
		if got := f.lookup(fmt.Sprintf("f%d", i)); got != ino {
			t.Fatalf("lookup f%d: inode %d, want %d", i, got, ino)
		}
		f.Forget(ino, 1)
	}
	for _, ino := range inos {
		if f.inMemory(ino) {
			t.Fatalf("clean inode %d still in memory after the kernel forgot it", ino)
		}
	}
	f.nodesMu.Lock()
	left := len(f.nodes)
	f.nodesMu.Unlock()
	if left != 1 {
		t.Fatalf("%d nodes in memory, want only the root", left)
	}
	if b := atomic.LoadInt64(&f.cacheBytes); b != 0 {
		t.Fatalf("%d bytes of cached blocks left for forgotten inodes", b)
	}

	// loaded again on demand, same size and data
	for i := range inos {
		ino := f.lookup(fmt.Sprintf("f%d", i))
		want := []byte{}
		if i%10 == 0 {
			want = data
		}
		got, err := f.contents(ino)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("f%d after reload: %d bytes, want %d", i, len(got), len(want))
		}
	}

	// an open file stays while forgotten
	ino := f.lookup("f1")
	var oo fuse.OpenOut
	if s := f.Open(nil, &fuse.OpenIn{InHeader: hdr(ino)}, &oo); !s.Ok() {
		t.Fatalf("open f1: %v", s)
	}
	f.Forget(ino, 2) // the lookups of the reload loop and of this test
	if !f.inMemory(ino) {
		t.Fatal("an open inode was dropped")
	}
	f.Release(nil, &fuse.ReleaseIn{InHeader: hdr(ino), Fh: ino})
	if f.inMemory(ino) {
		t.Fatal("a clean inode stayed in memory after its last close without kernel references")
	}
}

// TestLookupOfForgottenNode checks that a reference counted on a node
// dropped between loading it and counting the lookup is not lost.
func TestLookupOfForgottenNode(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	ino := f.create("a")
	f.Release(nil, &fuse.ReleaseIn{InHeader: hdr(ino), Fh: ino})
	f.sync()
	f.Forget(ino, 1)
	if f.inMemory(ino) {
		t.Fatal("clean forgotten inode still in memory")
	}
	n, e := f.node(ino) // a LOOKUP loads it ...
	if e != 0 {
		t.Fatalf("load: %v", e)
	}
	f.forgetClean(n) // ... a FORGET of the previous reference drops it ...
	if f.inMemory(ino) {
		t.Fatal("node not dropped")
	}
	f.addLookup(n) // ... and the LOOKUP counts its reference
	f.nodesMu.Lock()
	cur := f.nodes[ino]
	f.nodesMu.Unlock()
	if cur != n || n.lookups != 1 {
		t.Fatalf("after the lookup: node in table %v (want the looked-up one), %d lookups", cur == n, n.lookups)
	}
	// a copy loaded meanwhile takes the reference instead
	f.Forget(ino, 1)
	m, _ := f.node(ino)
	f.forgetClean(m)
	other, _ := f.node(ino)
	f.addLookup(m)
	if other == m || other.lookups != 1 || m.lookups != 0 {
		t.Fatalf("reference counted on the dropped copy: %d, on the table's: %d", m.lookups, other.lookups)
	}
}

// TestForgetRacesWithWrites looks files up, writes them (partial blocks
// through the cache, whole blocks straight to zdb) and forgets them again
// from several goroutines while write-backs run back to back, so nodes
// are dropped and loaded again between writes, during write-backs and
// with blocks in flight; every file then reads back as written.
func TestForgetRacesWithWrites(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	const (
		files  = 6
		rounds = 120
	)
	for i := 0; i < files; i++ {
		ino := f.create(fmt.Sprintf("r%d", i))
		f.Release(nil, &fuse.ReleaseIn{InHeader: hdr(ino), Fh: ino})
		f.Forget(ino, 1)
	}
	stop := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				flushed <- nil
				return
			default:
			}
			if err := f.flush(); err != nil {
				flushed <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	models := make([]model, files)
	errs := make(chan error, files)
	var dropped atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < files; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("r%d", i)
			var m model
			for r := 0; r < rounds; r++ {
				var eo fuse.EntryOut
				if s := f.Lookup(nil, &fuse.InHeader{NodeId: rootIno}, name, &eo); !s.Ok() {
					errs <- fmt.Errorf("round %d: lookup %s: %v", r, name, s)
					return
				}
				size, off := 3000+r*7, int64(r%5)*50000
				if r%3 == 0 {
					size, off = blockSize, int64(r%4)*blockSize
				}
				data := fill(size, int64(i*1000+r))
				if err := f.write(eo.NodeId, off, data); err != nil {
					errs <- fmt.Errorf("round %d: %s: %w", r, name, err)
					return
				}
				m = m.write(off, data)
				if r%2 == 0 {
					// written back first: the forget drops it unless a
					// write-back is running
					if err := f.flush(); err != nil {
						errs <- fmt.Errorf("round %d: write-back: %w", r, err)
						return
					}
				}
				f.Forget(eo.NodeId, 1)
				if !f.inMemory(eo.NodeId) {
					dropped.Add(1)
				}
			}
			models[i] = m
		}(i)
	}
	wg.Wait()
	close(stop)
	if err := <-flushed; err != nil {
		t.Fatalf("write-back: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d of %d forgets dropped the node", dropped.Load(), files*rounds)
	f.sync()
	for i := 0; i < files; i++ {
		name := fmt.Sprintf("r%d", i)
		ino := f.lookup(name)
		f.Forget(ino, 1)
		if f.inMemory(ino) {
			t.Errorf("%s still in memory after the last forget", name)
		}
		ino = f.lookup(name)
		got, err := f.contents(ino)
		must(t, err)
		sameBytes(t, name+" read back", got, models[i])
	}
}

// TestSweepDropsNodesForgottenDirty checks that nodes the kernel forgot
// while they still had changes to write leave memory at the sweep that
// follows their write-back, without waiting for 100,000 inodes.
func TestSweepDropsNodesForgottenDirty(t *testing.T) {
	_, sock := zdbOnly(t)
	f := openTestFS(t, sock, "")
	const files = 40
	inos := make([]uint64, files)
	for i := range inos {
		inos[i] = f.create(fmt.Sprintf("f%d", i))
		must(t, f.write(inos[i], 0, fill(5000, int64(i))))
		f.Release(nil, &fuse.ReleaseIn{InHeader: hdr(inos[i]), Fh: inos[i]})
		f.Forget(inos[i], 1) // dirty: kept
	}
	f.sweep() // before the write-back: nothing may go
	for _, ino := range inos {
		if !f.inMemory(ino) {
			t.Fatalf("inode %d was dropped before it was written back", ino)
		}
	}
	must(t, f.flush())
	f.sweep()
	for _, ino := range inos {
		if f.inMemory(ino) {
			t.Fatalf("inode %d, forgotten while dirty, still in memory after write-back and sweep", ino)
		}
	}
	for i := range inos {
		got, err := f.contents(f.lookup(fmt.Sprintf("f%d", i)))
		must(t, err)
		if !bytes.Equal(got, fill(5000, int64(i))) {
			t.Fatalf("f%d reads back %d bytes after reload", i, len(got))
		}
	}
}

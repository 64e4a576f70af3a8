package zdbfs

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropPages drops the kernel's clean cached pages of path.
func dropPages(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
}

// resident reports which pages of path are in the kernel's page cache.
func resident(t *testing.T, path string, size int) []bool {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	must(t, err)
	defer unix.Munmap(m)
	vec := make([]byte, (size+4095)/4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(size), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore %s: %v", path, e)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

// readPage reads one page at off through a descriptor that asks the
// kernel for no read-ahead, so that the READ covers that page only.
func readPage(t *testing.T, path string, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM))
	b := make([]byte, 4096)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPageStoreAfterSecondRead checks that a block read partially a second
// time is handed whole to the kernel's page cache, with the right bytes,
// and that a block read once is not.
func TestPageStoreAfterSecondRead(t *testing.T) {
	s := newStack(t)
	s.mount()
	path := filepath.Join(s.mnt, "f")
	data := make([]byte, 4*blockSize)
	rand.New(rand.NewSource(7)).Read(data)
	must(t, os.WriteFile(path, data, 0o644))
	dropPages(t, path)

	// block 1 is read once, block 2 twice (a page each time)
	readPage(t, path, blockSize+8192)
	readPage(t, path, 2*blockSize+8192)
	dropPages(t, path)
	if got := readPage(t, path, 2*blockSize+65536); !bytes.Equal(got, data[2*blockSize+65536:][:4096]) {
		t.Fatal("second read of block 2 returned wrong bytes")
	}
	pages := blockSize / 4096
	var res []bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		res = resident(t, path, len(data))
		all := true
		for _, r := range res[2*pages : 3*pages] {
			all = all && r
		}
		if all {
			break
		}
	}
	for p := 2 * pages; p < 3*pages; p++ {
		if !res[p] {
			t.Fatalf("page %d of block 2 is not in the page cache after the second read", p)
		}
	}
	for p := pages; p < 2*pages; p++ {
		if res[p] && p != pages+2 {
			t.Fatalf("page %d of block 1, read once, is in the page cache", p)
		}
	}
	// the stored pages hold the file's bytes
	got, err := os.ReadFile(path)
	must(t, err)
	if !bytes.Equal(got, data) {
		t.Fatal("file reads back different after the page cache store")
	}
}

// raceReaders reads random pages of path (size bytes) in two goroutines,
// dropping the cached pages now and then, so that blocks are read
// partially again and again and their rest is stored into the page cache,
// until the returned function is called.
func raceReaders(t *testing.T, path string, size int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed))
			f, err := os.Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
			b := make([]byte, 4096)
			for {
				select {
				case <-done:
					return
				default:
				}
				f.ReadAt(b, int64(rng.Intn(size/4096))*4096)
				if rng.Intn(8) == 0 {
					unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				}
			}
		}(int64(r))
	}
	return func() { close(done); wg.Wait() }
}

// raceSize is the file the race tests work on: eight blocks.
const raceSize = 8 * blockSize

// raceFile mounts a stack with a zeroed file of size bytes, read at random
// by raceReaders until stop is called.
func raceFile(t *testing.T, size int) (path string, stop func()) {
	t.Helper()
	s := newStack(t)
	s.mount()
	path = filepath.Join(s.mnt, "f")
	must(t, os.WriteFile(path, bytes.Repeat([]byte{0}, size), 0o644))
	return path, raceReaders(t, path, size)
}

// expectFilled fails unless path is size bytes, all equal to round, as
// who wrote them in that round.
func expectFilled(t *testing.T, path string, size, round int, who string) {
	t.Helper()
	got, err := os.ReadFile(path)
	must(t, err)
	if len(got) != size {
		t.Fatalf("round %d: file is %d bytes, want %d", round, len(got), size)
	}
	if i := bytes.IndexFunc(got, func(r rune) bool { return r != rune(round) }); i >= 0 {
		t.Fatalf("round %d: byte %d reads %d, %s wrote %d", round, i, got[i], who, round)
	}
}

// TestPageStoreNeverStale races page cache stores against writers and
// truncates: whatever the interleaving, the file must read back as the
// last writer left it, and a truncate must not be undone.
func TestPageStoreNeverStale(t *testing.T) {
	const size = raceSize
	path, stop := raceFile(t, size)
	defer stop()

	for round := 1; round <= 60; round++ {
		want := bytes.Repeat([]byte{byte(round)}, size)
		if round%3 == 0 {
			// a truncate down without a handle, then back up by a writer
			must(t, os.Truncate(path, blockSize+100))
			time.Sleep(time.Millisecond)
			if fi, err := os.Stat(path); err != nil || fi.Size() != blockSize+100 {
				t.Fatalf("round %d: size after truncate: %v %v", round, fi.Size(), err)
			}
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		must(t, err)
		// rewrite a page in every block, then the rest
		for off := int64(0); off < size; off += blockSize {
			_, err := f.WriteAt(want[:4096], off+4096)
			must(t, err)
		}
		_, err = f.WriteAt(want, 0)
		must(t, err)
		must(t, f.Close())
		time.Sleep(2 * time.Millisecond) // let stores copied before the close try to land
		expectFilled(t, path, size, round, "the last writer")
	}
}

// TestPageStoreTruncateKeepsOthersOpen truncates a file whose last block
// must first be fetched from a zdb that does not answer (stopped): opening
// another file for writing must not wait for that truncate.
func TestPageStoreTruncateKeepsOthersOpen(t *testing.T) {
	s := newStack(t)
	s.mount()
	a, b := filepath.Join(s.mnt, "a"), filepath.Join(s.mnt, "b")
	must(t, os.WriteFile(a, bytes.Repeat([]byte{1}, 2*blockSize+100), 0o644))
	must(t, os.WriteFile(b, []byte("b"), 0o644))
	s.unmount() // zdbfs's block cache starts cold
	s.mount()
	for _, p := range []string{a, b} {
		_, err := os.Stat(p)
		must(t, err)
	}

	zdb := s.zdb.cmd.Process
	must(t, zdb.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { zdb.Signal(syscall.SIGCONT) })
	set0, _ := requestCounts(t, s.mnt)
	truncated := make(chan error, 1)
	go func() { truncated <- os.Truncate(a, blockSize+100) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if set, _ := requestCounts(t, s.mnt); set > set0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the truncate sent no SETATTR")
		}
	}
	time.Sleep(100 * time.Millisecond) // SETATTR waits for zdb now

	opened := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(b, os.O_WRONLY, 0)
		if err == nil {
			err = f.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		must(t, err)
	case <-time.After(5 * time.Second):
		t.Error("opening another file for writing waits for a truncate that waits for zdb")
		defer func() { must(t, <-opened) }()
	}
	must(t, zdb.Signal(syscall.SIGCONT))
	must(t, <-truncated)
	if fi, err := os.Stat(a); err != nil || fi.Size() != blockSize+100 {
		t.Fatalf("size after truncate: %v %v", fi, err)
	}
}

// TestPageStoreMmapWriter writes through a shared mapping whose descriptor
// is closed at once, while stores race: the handle lives on in the mapping
// (RELEASE comes at munmap, after the kernel wrote the dirty pages), so no
// store may overwrite what was written through the mapping.
func TestPageStoreMmapWriter(t *testing.T) {
	const size = raceSize
	path, stop := raceFile(t, size)
	defer stop()

	for round := 1; round <= 20; round++ {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		must(t, err)
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		must(t, err)
		must(t, f.Close())
		// a page in every block first, so that the rest of each block
		// is read (and would be stored) while the mapping writes
		for off := 0; off < size; off += blockSize {
			copy(m[off+4096:off+8192], bytes.Repeat([]byte{byte(round)}, 4096))
		}
		time.Sleep(2 * time.Millisecond)
		copy(m, bytes.Repeat([]byte{byte(round)}, size))
		must(t, unix.Munmap(m))
		time.Sleep(2 * time.Millisecond) // let stores copied before the munmap try to land
		expectFilled(t, path, size, round, "the mapping")
	}
}

// TestPageStoreOff checks that with nopagestore a block read twice is not
// handed to the page cache.
func TestPageStoreOff(t *testing.T) {
	s := newStack(t)
	s.mount("nopagestore")
	path := filepath.Join(s.mnt, "f")
	data := make([]byte, 2*blockSize)
	rand.New(rand.NewSource(8)).Read(data)
	must(t, os.WriteFile(path, data, 0o644))
	dropPages(t, path)
	readPage(t, path, 8192)
	dropPages(t, path)
	readPage(t, path, 65536)
	time.Sleep(300 * time.Millisecond) // a store would have landed by now
	for p, r := range resident(t, path, len(data))[:blockSize/4096] {
		if r && p != 16 {
			t.Fatalf("page %d is in the page cache with nopagestore", p)
		}
	}
}

// TestRestRanges checks what of a block a store may hand over around a
// READ, including a READ answered from a size a truncate changed while it
// waited (then nothing past the new size).
func TestRestRanges(t *testing.T) {
	const B = blockSize
	for _, c := range []struct {
		off, k, size uint64
		want         [][2]uint64
	}{
		{B + 8192, 4096, 8 * B, [][2]uint64{{B, B + 8192}, {B + 12288, 2 * B}}},
		{B, 4096, 8 * B, [][2]uint64{{B + 4096, 2 * B}}},
		{B + 100, 50, 8 * B, [][2]uint64{{B + 4096, 2 * B}}},
		{B + 8192, 4096, B + 10000, [][2]uint64{{B, B + 8192}}},
		{B + 8192, 4096, B + 5000, [][2]uint64{{B, B + 5000}}},
		// the READ of the reported failure: block 3, size now 131,172
		{3*B + 32768, 4096, B + 100, nil},
		{3 * B, 4096, 3 * B, nil},
	} {
		if got := restRanges(c.off, c.k, c.size); !reflect.DeepEqual(got, c.want) {
			t.Errorf("restRanges(%d, %d, %d) = %v, want %v", c.off, c.k, c.size, got, c.want)
		}
	}
}

package zdbfs

import (
	"time"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/qsfs/qsfs/zdb/client"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// bigFileSize is the size of the random file of the workload: 256 MiB by
// default, QSFS_ZDBFS_BIG_MIB to change it (1024 for the 1 GiB run).
func bigFileSize(t *testing.T) int64 {
	if s := os.Getenv("QSFS_ZDBFS_BIG_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("QSFS_ZDBFS_BIG_MIB=%q: %v", s, err)
		}
		return int64(n) << 20
	}
	return 256 << 20
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(content), 0o644))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return string(b)
}

// writeRandom writes size random bytes and returns their sha256.
func writeRandom(t *testing.T, path string, size int64, seed int64) string {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	h := sha256.New()
	r := rand.New(rand.NewSource(seed))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		r.Read(buf[:n])
		h.Write(buf[:n])
		_, err := f.Write(buf[:n])
		must(t, err)
		left -= n
	}
	must(t, f.Close())
	return hex.EncodeToString(h.Sum(nil))
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// workload creates, renames, links, truncates and appends under root and
// returns the sha256 of its big random file.
func workload(t *testing.T, root string, big int64) string {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(root, "a/b/c"), 0o755))
	must(t, os.Mkdir(filepath.Join(root, "d"), 0o700))
	for i := 0; i < 200; i++ {
		writeFile(t, filepath.Join(root, "a/b", fmt.Sprintf("f%03d", i)), strings.Repeat(strconv.Itoa(i), i+1))
	}
	// renames: a file, a file over another, a directory across directories
	writeFile(t, filepath.Join(root, "a/old"), "old")
	must(t, os.Rename(filepath.Join(root, "a/old"), filepath.Join(root, "d/new")))
	writeFile(t, filepath.Join(root, "a/over"), "winner")
	must(t, os.Rename(filepath.Join(root, "a/over"), filepath.Join(root, "a/b/f000")))
	must(t, os.Rename(filepath.Join(root, "a/b/c"), filepath.Join(root, "d/c")))
	// hard links and symlinks
	must(t, os.Link(filepath.Join(root, "a/b/f001"), filepath.Join(root, "d/hard")))
	must(t, os.Symlink("../a/b/f002", filepath.Join(root, "d/soft")))
	if got := readFile(t, filepath.Join(root, "d/soft")); got != "222" {
		t.Fatalf("through symlink: %q", got)
	}
	// truncates down and up, sparse, append
	writeFile(t, filepath.Join(root, "trunc"), strings.Repeat("x", 300000))
	must(t, os.Truncate(filepath.Join(root, "trunc"), 140000))
	must(t, os.Truncate(filepath.Join(root, "trunc"), 500000))
	b := []byte(readFile(t, filepath.Join(root, "trunc")))
	if len(b) != 500000 || !bytes.Equal(b[:140000], bytes.Repeat([]byte("x"), 140000)) || !bytes.Equal(b[140000:], make([]byte, 360000)) {
		t.Fatal("truncate down then up did not read back as data then zeros")
	}
	f, err := os.OpenFile(filepath.Join(root, "sparse"), os.O_CREATE|os.O_WRONLY, 0o644)
	must(t, err)
	_, err = f.WriteAt([]byte("end"), 10<<20)
	must(t, err)
	must(t, f.Close())
	for i := 0; i < 3; i++ {
		f, err := os.OpenFile(filepath.Join(root, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		must(t, err)
		_, err = f.WriteString(fmt.Sprintf("line %d\n", i))
		must(t, err)
		must(t, f.Close())
	}
	if got := readFile(t, filepath.Join(root, "log")); got != "line 0\nline 1\nline 2\n" {
		t.Fatalf("appends: %q", got)
	}
	must(t, os.Remove(filepath.Join(root, "a/b/f100")))
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o640))
	sum := writeRandom(t, filepath.Join(root, "big"), big, 42)
	if got := fileSum(t, filepath.Join(root, "big")); got != sum {
		t.Fatalf("big file reads back with sha256 %s, wrote %s", got, sum)
	}
	return sum
}

// tree describes every entry under root: type, mode, size, links, content hash.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d size=%d nlink=%d mtime=%d", st.Mode, st.Uid, st.Size, st.Nlink, st.Mtim.Sec)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			desc += " sha256=" + fileSum(t, path)
		case syscall.S_IFLNK:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			desc += " target=" + target
		case syscall.S_IFDIR:
			desc = fmt.Sprintf("mode=%o nlink=%d", st.Mode, st.Nlink)
		}
		out[rel] = desc
		return nil
	})
	must(t, err)
	return out
}

func diffTrees(t *testing.T, before, after map[string]string) {
	t.Helper()
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if before[k] != after[k] {
			t.Errorf("%s: before %q, after %q", k, before[k], after[k])
		}
	}
}

// TestWorkloadRemount runs the workload, then checks an unmount and a
// remount show the same tree.
func TestWorkloadRemount(t *testing.T) {
	s := newStack(t)
	s.mount()
	workload(t, s.mnt, bigFileSize(t))
	before := tree(t, s.mnt)
	if len(before) < 200 {
		t.Fatalf("tree has only %d entries", len(before))
	}
	s.unmount()
	// the temp namespace holds nothing but its header
	c, err := client.Dial("unix", s.sock, 5*time.Second)
	must(t, err)
	info, err := c.NSInfo("zdbfs-temp")
	c.Close()
	must(t, err)
	if info["entries"] != "1" {
		t.Errorf("zdbfs-temp has %s entries after the workload, want 1", info["entries"])
	}
	s.mount()
	diffTrees(t, before, tree(t, s.mnt))
}

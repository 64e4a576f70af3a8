package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/mountinfo"
	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/zdb/client"
	"golang.org/x/sys/unix"
)

// The server runs in a child process (this test binary, re-executed with
// serveEnv set): served in the test's own process, a request the test makes
// can wait for an answer that a reader goroutine cannot give while the Go
// runtime stops the world for the garbage collector, which in turn waits for
// the test's thread (seen once in CI: TestDiscard hung).
const (
	serveEnv = "FUSECEILING_TEST_MOUNT"
	zdbEnv   = "FUSECEILING_TEST_ZDB"
)

func TestMain(m *testing.M) {
	if mnt := os.Getenv(serveEnv); mnt != "" {
		if err := run(mnt, os.Getenv(zdbEnv), 4); err != nil {
			fmt.Fprintf(os.Stderr, "fuseceiling: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveAt mounts the server at a new directory and returns it; the mount
// is detached and the server waited for at the end of the test.
func serveAt(t *testing.T, zdbSock string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE filesystems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	mnt := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), serveEnv+"="+mnt, zdbEnv+"="+zdbSock)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var werr error
	go func() {
		werr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		select {
		case <-exited:
			if werr != nil {
				t.Errorf("server: %v", werr)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("server still running 10 s after the unmount")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		e, ok, err := mountinfo.At(mountinfo.Self, mnt)
		if err != nil {
			t.Fatal(err)
		}
		if ok && e.FSType == "fuse.fuseceiling" {
			return mnt
		}
		select {
		case <-exited:
			t.Fatalf("server exited before mounting: %v", werr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fuseceiling mount at %s", mnt)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workload writes what the bench writes, smaller: a large file with fsync
// and small files in a new directory; it checks sizes, names and unlink,
// and returns the bytes written.
func workload(t *testing.T, mnt string) int64 {
	t.Helper()
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	big = append(big, "tail"...)
	f, err := os.Create(filepath.Join(mnt, "dd.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	total := int64(len(big))
	dir := filepath.Join(mnt, "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	small := bytes.Repeat([]byte{'x'}, 4096)
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), small, 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(len(small))
	}
	unix.Sync()
	if st, err := os.Stat(filepath.Join(mnt, "dd.dat")); err != nil || st.Size() != int64(len(big)) {
		t.Fatalf("stat dd.dat: %v, size %v, want %d", err, st, len(big))
	}
	if st, err := os.Stat(filepath.Join(dir, "f49")); err != nil || st.Size() != 4096 || !st.Mode().IsRegular() {
		t.Fatalf("stat small/f49: %v %v", err, st)
	}
	if _, err := os.Stat(filepath.Join(dir, "f50")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of a name never made: %v, want ENOENT", err)
	}
	if err := os.Remove(filepath.Join(dir, "f0")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "f0")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat after unlink: %v, want ENOENT", err)
	}
	return total
}

func TestDiscard(t *testing.T) {
	workload(t, serveAt(t, ""))
}

// TestStoreInZdb: with -zdb every byte written reaches the zdb as SETs of
// at most 128 KiB.
func TestStoreInZdb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE filesystems")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "zdb.sock")
	zdb := exec.Command(testbin.Path(t), "zdb", "--mode", "seq", "--socket", sock,
		"--data", filepath.Join(dir, "data"), "--index", filepath.Join(dir, "index"))
	zdb.Stdout, zdb.Stderr = os.Stdout, os.Stderr
	if err := zdb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zdb.Process.Kill()
		zdb.Wait()
	})
	var c *client.Conn
	for deadline := time.Now().Add(20 * time.Second); ; {
		var err error
		if c, err = client.Dial("unix", sock, 5*time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zdb did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()

	total := workload(t, serveAt(t, sock))
	info, err := c.NSInfo("default")
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := strconv.ParseInt(info["entries"], 10, 64)
	size, _ := strconv.ParseInt(info["data_size_bytes"], 10, 64)
	// the kernel may send a page again (the tail block), never less than all
	if size < total || entries < (total+blockSize-1)/blockSize {
		t.Fatalf("zdb holds %d entries of %d bytes, want at least all %d bytes written: %v", entries, size, total, info)
	}
}

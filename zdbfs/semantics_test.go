package zdbfs

import (
	"encoding/binary"
	"errors"
	"github.com/qsfs/qsfs/zdb/client"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func lstat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(path, &st))
	return st
}

// TestSemantics checks the behaviour where official 0-db-fs 0.1.11 is wrong
// or missing (issue 7).
func TestSemantics(t *testing.T) { runSemantics(t) }

func runSemantics(t *testing.T, opts ...string) {
	s := newStack(t)
	s.mount(append([]string{"allow_other", "size=1G"}, opts...)...)
	m := s.mnt

	t.Run("ENOTEMPTY", func(t *testing.T) {
		must(t, os.MkdirAll(filepath.Join(m, "ne/full/x"), 0o755))
		must(t, os.Mkdir(filepath.Join(m, "ne/other"), 0o755))
		wantErrno(t, "rmdir non-empty", syscall.Rmdir(filepath.Join(m, "ne/full")), syscall.ENOTEMPTY)
		wantErrno(t, "rename over non-empty", syscall.Rename(filepath.Join(m, "ne/other"), filepath.Join(m, "ne/full")), syscall.ENOTEMPTY)
		if _, err := os.Stat(filepath.Join(m, "ne/full/x")); err != nil {
			t.Errorf("child lost: %v", err)
		}
	})
	t.Run("dir link counts", func(t *testing.T) {
		must(t, os.MkdirAll(filepath.Join(m, "lc/a"), 0o755))
		must(t, os.Mkdir(filepath.Join(m, "lc/b"), 0o755))
		writeFile(t, filepath.Join(m, "lc/f"), "")
		if n := lstat(t, filepath.Join(m, "lc")).Nlink; n != 4 {
			t.Errorf("dir with 2 subdirs has nlink %d, want 4", n)
		}
		if n := lstat(t, filepath.Join(m, "lc/a")).Nlink; n != 2 {
			t.Errorf("empty dir has nlink %d, want 2", n)
		}
		must(t, os.Rename(filepath.Join(m, "lc/a"), filepath.Join(m, "lc/b/a")))
		if n := lstat(t, filepath.Join(m, "lc")).Nlink; n != 3 {
			t.Errorf("after moving a subdir out: nlink %d, want 3", n)
		}
	})
	t.Run("mknod", func(t *testing.T) {
		must(t, syscall.Mknod(filepath.Join(m, "fifo"), syscall.S_IFIFO|0o600, 0))
		must(t, syscall.Mknod(filepath.Join(m, "null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		st := lstat(t, filepath.Join(m, "null"))
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("char device: mode %o rdev %x", st.Mode, st.Rdev)
		}
		if lstat(t, filepath.Join(m, "fifo")).Mode&syscall.S_IFMT != syscall.S_IFIFO {
			t.Error("fifo has the wrong type")
		}
		l, err := net.Listen("unix", filepath.Join(m, "sock"))
		must(t, err)
		l.Close()
	})
	t.Run("parent times", func(t *testing.T) {
		d := filepath.Join(m, "pt")
		must(t, os.Mkdir(d, 0o755))
		old := time.Unix(1000, 0)
		ops := []struct {
			name string
			op   func() error
		}{
			{"create", func() error { return os.WriteFile(filepath.Join(d, "f"), nil, 0o644) }},
			{"link", func() error { return os.Link(filepath.Join(d, "f"), filepath.Join(d, "g")) }},
			{"unlink", func() error { return os.Remove(filepath.Join(d, "g")) }},
			{"rename", func() error { return os.Rename(filepath.Join(d, "f"), filepath.Join(d, "h")) }},
			{"mkdir", func() error { return os.Mkdir(filepath.Join(d, "sub"), 0o755) }},
			{"rmdir", func() error { return os.Remove(filepath.Join(d, "sub")) }},
			{"symlink", func() error { return os.Symlink("h", filepath.Join(d, "s")) }},
		}
		for _, o := range ops {
			must(t, os.Chtimes(d, old, old))
			must(t, o.op())
			st := lstat(t, d)
			if st.Mtim.Sec == 1000 {
				t.Errorf("%s did not change the parent's mtime", o.name)
			}
			if st.Ctim.Sec < time.Now().Unix()-5 {
				t.Errorf("%s did not change the parent's ctime", o.name)
			}
		}
	})
	t.Run("ctime", func(t *testing.T) {
		names := []string{"chmod", "chown", "truncate", "link", "write"}
		for _, n := range names {
			writeFile(t, filepath.Join(m, "ct-"+n), "data")
		}
		c0 := lstat(t, filepath.Join(m, "ct-chmod")).Ctim.Sec
		time.Sleep(1100 * time.Millisecond) // times have one-second resolution
		must(t, os.Chmod(filepath.Join(m, "ct-chmod"), 0o600))
		must(t, os.Chown(filepath.Join(m, "ct-chown"), 1, 1))
		must(t, os.Truncate(filepath.Join(m, "ct-truncate"), 1))
		must(t, os.Link(filepath.Join(m, "ct-link"), filepath.Join(m, "ct-link2")))
		f, err := os.OpenFile(filepath.Join(m, "ct-write"), os.O_WRONLY|os.O_APPEND, 0)
		must(t, err)
		_, err = f.WriteString("more")
		must(t, err)
		must(t, f.Close())
		if mt := lstat(t, filepath.Join(m, "ct-write")).Mtim.Sec; mt <= c0 {
			t.Errorf("write did not change mtime (%d)", mt)
		}
		for _, n := range names {
			if c := lstat(t, filepath.Join(m, "ct-"+n)).Ctim.Sec; c <= c0 {
				t.Errorf("%s did not change ctime (%d)", n, c)
			}
		}
	})
	t.Run("unlinked while open", func(t *testing.T) {
		p := filepath.Join(m, "ghost")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
		must(t, err)
		defer f.Close()
		_, err = f.WriteString("before")
		must(t, err)
		must(t, os.Remove(p))
		_, err = f.WriteString("+after")
		must(t, err)
		buf := make([]byte, 64)
		n, err := f.ReadAt(buf, 0)
		if string(buf[:n]) != "before+after" {
			t.Errorf("read %q (%v) from an unlinked open file", buf[:n], err)
		}
		fi, err := f.Stat()
		must(t, err)
		if st := fi.Sys().(*syscall.Stat_t); st.Nlink != 0 || st.Size != 12 {
			t.Errorf("fstat: nlink %d size %d", st.Nlink, st.Size)
		}
	})
	t.Run("ENAMETOOLONG", func(t *testing.T) {
		long := filepath.Join(m, strings.Repeat("n", 256))
		wantErrno(t, "create", os.WriteFile(long, nil, 0o644), syscall.ENAMETOOLONG)
		wantErrno(t, "mkdir", syscall.Mkdir(long, 0o755), syscall.ENAMETOOLONG)
		writeFile(t, filepath.Join(m, strings.Repeat("n", 255)), "ok")
	})
	t.Run("no silent truncation", func(t *testing.T) {
		p := filepath.Join(m, "limits")
		writeFile(t, p, "")
		wantErrno(t, "chown 70000", os.Chown(p, 70000, 70000), syscall.EOVERFLOW)
		if st := lstat(t, p); st.Uid != 0 {
			t.Errorf("uid changed to %d", st.Uid)
		}
		far := []unix.Timespec{{Sec: 1 << 33}, {Sec: 1 << 33}}
		wantErrno(t, "utimes 2^33", unix.UtimesNano(p, far), syscall.EOVERFLOW)
		neg := []unix.Timespec{{Sec: -5}, {Sec: -5}}
		wantErrno(t, "utimes -5", unix.UtimesNano(p, neg), syscall.EINVAL)
		ok := []unix.Timespec{{Sec: 0xfffffff0}, {Sec: 0xfffffff0}}
		must(t, unix.UtimesNano(p, ok))
		if st := lstat(t, p); st.Mtim.Sec != 0xfffffff0 {
			t.Errorf("mtime %d, want %d", st.Mtim.Sec, 0xfffffff0)
		}
	})
	t.Run("xattrs", func(t *testing.T) {
		p := filepath.Join(m, "x")
		writeFile(t, p, "")
		wantErrno(t, "setxattr", unix.Setxattr(p, "user.a", []byte("v"), 0), syscall.ENOTSUP)
	})
	t.Run("statfs", func(t *testing.T) {
		var sf unix.Statfs_t
		must(t, unix.Statfs(m, &sf))
		if sf.Blocks*uint64(sf.Frsize) != 1<<30 || sf.Bfree > sf.Blocks || sf.Namelen != 255 {
			t.Errorf("statfs: blocks %d frsize %d bfree %d namelen %d", sf.Blocks, sf.Frsize, sf.Bfree, sf.Namelen)
		}
	})
	t.Run("ioctls", func(t *testing.T) {
		f, err := os.Open(m)
		must(t, err)
		defer f.Close()
		buf := make([]byte, 240)
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), ioctlStatistics, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
			t.Fatalf("statistics ioctl: %v", e)
		}
		if v := binary.LittleEndian.Uint64(buf); v != 2 {
			t.Errorf("stats version %d, want 2", v)
		}
		if reqs := binary.LittleEndian.Uint64(buf[8:]); reqs == 0 {
			t.Error("stats count no requests")
		}
		var ts uint64
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), ioctlSnapshot, uintptr(unsafe.Pointer(&ts))); e != 0 {
			t.Fatalf("snapshot ioctl: %v", e)
		}
		if d := int64(ts) - time.Now().Unix(); d < -60 || d > 60 {
			t.Errorf("snapshot timestamp %d is not now", ts)
		}
	})
	t.Run("permissions for other users", func(t *testing.T) {
		writeFile(t, filepath.Join(m, "secret"), "root only")
		must(t, os.Chmod(filepath.Join(m, "secret"), 0o600))
		must(t, os.Mkdir(filepath.Join(m, "sticky"), 0o777|os.ModeSticky))
		must(t, os.Chmod(filepath.Join(m, "sticky"), 0o777|os.ModeSticky))
		writeFile(t, filepath.Join(m, "sticky/theirs"), "")
		must(t, os.Chown(filepath.Join(m, "sticky/theirs"), 1001, 1001))
		as := func(uid uint32, script string) error {
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Dir = "/"
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
			return cmd.Run()
		}
		if err := as(1000, "cat "+filepath.Join(m, "x")); err != nil {
			t.Fatalf("uid 1000 cannot read a 0644 file: %v", err)
		}
		if err := as(1000, "cat "+filepath.Join(m, "secret")); err == nil {
			t.Error("uid 1000 read a 0600 root file")
		}
		if err := as(1000, "rm -f "+filepath.Join(m, "sticky/theirs")); err == nil {
			if _, err := os.Stat(filepath.Join(m, "sticky/theirs")); os.IsNotExist(err) {
				t.Error("uid 1000 removed uid 1001's file in a sticky directory")
			}
		}
		if err := as(1001, "rm -f "+filepath.Join(m, "sticky/theirs")); err != nil {
			t.Errorf("owner could not remove its file in a sticky directory: %v", err)
		}
	})
}

// TestENOSPC fills a data namespace that has a maxsize: writes fail with
// ENOSPC at fsync, not silently.
func TestENOSPC(t *testing.T) {
	s := newStack(t)
	s.mount()
	s.unmount()
	c, err := client.Dial("unix", s.sock, 5*time.Second)
	must(t, err)
	_, err = c.Do("NSSET", "zdbfs-data", "maxsize", "2000000")
	c.Close()
	must(t, err)
	s.mount()
	f, err := os.Create(filepath.Join(s.mnt, "big"))
	must(t, err)
	defer f.Close()
	_, err = f.Write(make([]byte, 4<<20))
	if err == nil {
		err = f.Sync()
	}
	wantErrno(t, "write 4 MiB into a 2 MB namespace", err, syscall.ENOSPC)
	f.Close()
	must(t, os.Remove(filepath.Join(s.mnt, "big")))
	// the tree stays usable; unmount must still succeed
	writeFile(t, filepath.Join(s.mnt, "small"), "fits")
	fsyncPath(t, filepath.Join(s.mnt, "small"))
}

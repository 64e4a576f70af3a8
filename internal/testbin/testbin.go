// Package testbin gives tests the path of a freshly built qsfs binary, so
// integration tests exercise the real program (`qsfs zdb`, `qsfs zdbfs`, ...)
// the way users and the plugin run it. It owns nothing else.
//
// The binary is built once per test process, into qsfs-testbin-<pid> in the
// temporary directory; directories of test processes that are gone are
// removed by the next build. Set QSFS_BIN to use a binary that was already
// built (the Makefile does).
package testbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	once     sync.Once
	path     string
	buildErr error
	output   []byte
)

// Path returns the path of the qsfs binary, building it on first use. It
// fails the test when the build fails.
func Path(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if p := os.Getenv("QSFS_BIN"); p != "" {
			path, buildErr = filepath.Abs(p)
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		sweep()
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("qsfs-testbin-%d", os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		path = filepath.Join(dir, "qsfs")
		cmd := exec.Command("go", "build", "-o", path, ".")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		output, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build qsfs binary: %v\n%s", buildErr, output)
	}
	return path
}

// sweep removes the binaries of test processes that have exited (and, from
// before binaries were named by pid, those older than a day).
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "qsfs-testbin-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "qsfs-testbin-"))
		if err != nil || pid <= 0 {
			if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
				os.RemoveAll(d)
			}
			continue
		}
		if pid != os.Getpid() && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// Package testbin gives tests the path of a freshly built qsfs binary, so
// integration tests exercise the real program (`qsfs zdb`, `qsfs zdbfs`, ...)
// the way users and the plugin run it. It owns nothing else.
//
// The binary is built once per test process. Set QSFS_BIN to use a binary
// that was already built (the Makefile does).
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
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
		dir, err := os.MkdirTemp("", "qsfs-testbin-")
		if err != nil {
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

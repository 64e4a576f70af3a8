package plugin

import (
	"os"
	"path/filepath"
	"testing"
)

func TestVolumeMainArguments(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"bogus", "v1"},
		{"update"},
		{"status"},
		{"teardown"},
	} {
		if rc := VolumeMain(args); rc == 0 {
			t.Errorf("VolumeMain(%q) = 0, want an error", args)
		}
	}
	if rc := VolumeMain([]string{"--help"}); rc != 0 {
		t.Errorf("help: %d", rc)
	}
	// A socket nobody listens on: the call fails with a non-zero status.
	sock := filepath.Join(t.TempDir(), "none.sock")
	if rc := VolumeMain([]string{"status", "v1", "--socket", sock}); rc != 1 {
		t.Errorf("status on a dead socket: %d", rc)
	}
	if rc := VolumeMain([]string{"update", "v1", "-o", "novalue", "--socket", sock}); rc != 2 {
		t.Errorf("update with a malformed -o: %d", rc)
	}
}

func TestFindSocket(t *testing.T) {
	if s, _ := findSocket("/x.sock"); s != "/x.sock" {
		t.Errorf("flag not used: %s", s)
	}
	t.Setenv("QSFS_SOCKET", "/y.sock")
	if s, _ := findSocket(""); s != "/y.sock" {
		t.Errorf("QSFS_SOCKET not used: %s", s)
	}
	os.Unsetenv("QSFS_SOCKET")
}

package zstor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRollingLogFile(t *testing.T) {
	dir := t.TempDir()
	r, err := openRolling(filepath.Join(dir, "zstor.log"))
	if err != nil {
		t.Fatal(err)
	}
	r.limit = 100
	line := []byte(strings.Repeat("x", 39) + "\n")
	for i := 0; i < 40; i++ {
		if _, err := r.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	for _, name := range []string{"zstor.log", "zstor.0.log", "zstor.4.log"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() > 100 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "zstor.5.log")); !os.IsNotExist(err) {
		t.Errorf("more than 5 old files kept")
	}
}

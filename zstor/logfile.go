package zstor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// rollingFile is the --log_file writer: it rolls over at 10 MiB and keeps
// 5 old files named like the official zstor's (zstor.log -> zstor.1.log).
type rollingFile struct {
	path  string
	limit int64
	keep  int

	mu   sync.Mutex
	f    *os.File
	size int64
}

func openRolling(path string) (*rollingFile, error) {
	r := &rollingFile{path: path, limit: 10 << 20, keep: 5}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rollingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log file %s: %w", r.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

// rolled returns the name of old file n.
func (r *rollingFile) rolled(n int) string {
	ext := filepath.Ext(r.path)
	return fmt.Sprintf("%s.%d%s", strings.TrimSuffix(r.path, ext), n, ext)
}

func (r *rollingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.size+int64(len(p)) > r.limit && r.size > 0 {
		r.f.Close()
		os.Remove(r.rolled(r.keep - 1))
		for i := r.keep - 2; i >= 0; i-- {
			os.Rename(r.rolled(i), r.rolled(i+1))
		}
		os.Rename(r.path, r.rolled(0))
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *rollingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}

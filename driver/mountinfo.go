package driver

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry struct {
	MountPoint string
	FSType     string
	Source     string
}

// ReadMountinfo parses a mountinfo file (normally /proc/self/mountinfo).
func ReadMountinfo(path string) ([]MountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo %s: %w", path, err)
	}
	defer f.Close()
	var out []MountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := parseMountinfoLine(sc.Text()); ok {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo %s: %w", path, err)
	}
	return out, nil
}

// parseMountinfoLine reads "id parent maj:min root mountpoint opts [opt...] -
// fstype source superopts".
func parseMountinfoLine(line string) (MountEntry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" && i >= 6 {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+3 {
		return MountEntry{}, false
	}
	return MountEntry{
		MountPoint: unescapeOctal(fields[4]),
		FSType:     fields[sep+1],
		Source:     unescapeOctal(fields[sep+2]),
	}, true
}

// unescapeOctal undoes the kernel's \NNN escapes (space, tab, newline, \).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountedFS returns the filesystem type mounted at path ("" if none); the
// last entry wins, as the kernel's view does for stacked mounts.
func MountedFS(mountinfo, path string) (string, error) {
	entries, err := ReadMountinfo(mountinfo)
	if err != nil {
		return "", err
	}
	fs := ""
	for _, e := range entries {
		if e.MountPoint == path {
			fs = e.FSType
		}
	}
	return fs, nil
}

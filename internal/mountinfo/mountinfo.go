// Package mountinfo reads /proc/self/mountinfo: which filesystem is mounted
// where, and on which device. It owns the parsing of that file (fields and
// the kernel's octal escapes) for the driver and zdbfs; nothing else.
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Self is the mount table of this process's mount namespace.
const Self = "/proc/self/mountinfo"

// Entry is one line of a mountinfo file.
type Entry struct {
	Dev        string // major:minor of the mounted device
	MountPoint string
	FSType     string
	Source     string
}

// Read parses a mountinfo file (normally Self).
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mountinfo %s: %w", path, err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := parseLine(sc.Text()); ok {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo %s: %w", path, err)
	}
	return out, nil
}

// At returns the entry of the mount on top at mountpoint (the last one, as
// the kernel's view is for stacked mounts), and whether there is one.
func At(path, mountpoint string) (Entry, bool, error) {
	entries, err := Read(path)
	if err != nil {
		return Entry{}, false, err
	}
	var top Entry
	found := false
	for _, e := range entries {
		if e.MountPoint == mountpoint {
			top, found = e, true
		}
	}
	return top, found, nil
}

// parseLine reads "id parent maj:min root mountpoint opts [opt...] -
// fstype source superopts".
func parseLine(line string) (Entry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i, f := range fields {
		if f == "-" && i >= 6 {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+3 {
		return Entry{}, false
	}
	return Entry{
		Dev:        fields[2],
		MountPoint: Unescape(fields[4]),
		FSType:     fields[sep+1],
		Source:     Unescape(fields[sep+2]),
	}, true
}

// Unescape undoes the kernel's \NNN escapes (space, tab, newline, \).
func Unescape(s string) string {
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

package mountinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a`:           "/mnt/a",
		`/mnt/a\040b`:      "/mnt/a b",
		`/mnt/tab\011x`:    "/mnt/tab\tx",
		`/x\134y`:          `/x\y`,
		`/short\04`:        `/short\04`,
		`/not\999octal\04`: `/not\999octal\04`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	lines := "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n" +
		"60 27 0:39 / /mnt/a\\040b rw,nosuid shared:7 - fuse.zdbfs zdbfs rw,user_id=0\n" +
		"61 60 0:41 / /mnt/a\\040b rw - tmpfs none rw\n" +
		"garbage line\n"
	if err := os.WriteFile(p, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	e, ok, err := At(p, "/mnt/a b")
	if err != nil || !ok || e.FSType != "tmpfs" || e.Dev != "0:41" {
		t.Fatalf("At = %+v %v %v, want the tmpfs on top (0:41)", e, ok, err)
	}
	entries, err := Read(p)
	if err != nil || len(entries) != 3 || entries[1] != (Entry{Dev: "0:39", MountPoint: "/mnt/a b", FSType: "fuse.zdbfs", Source: "zdbfs"}) {
		t.Fatalf("Read = %+v %v", entries, err)
	}
	if _, ok, _ := At(p, "/mnt"); ok {
		t.Fatal("At found a mount at /mnt")
	}
	if _, _, err := At(filepath.Join(t.TempDir(), "missing"), "/"); err == nil {
		t.Fatal("At of a missing file: no error")
	}
}

package driver

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	good := []string{"v1", "data_1", "a.b-c", "A9", "x" + string(make([]byte, 0))}
	bad := []string{"", "a", "/etc", "a/b", "..", "a..b", ".hidden", "-x", "sp ace", "n\x00", string(make([]byte, MaxNameLength+1))}
	for _, n := range good[:4] {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q): %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); err == nil {
			t.Errorf("ValidateName(%q) accepted", n)
		}
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id, err := NewID()
		if err != nil || !re.MatchString(id) || seen[id] {
			t.Fatalf("NewID() = %q, %v", id, err)
		}
		seen[id] = true
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := &Store{Root: t.TempDir()}
	if err := s.Init(); err != nil {
		t.Fatal(err)
	}
	spec, err := (&Parser{}).Parse(archivedOpts())
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{Name: "vol1", ID: "0123456789abcdef", CreatedAt: time.Now().UTC().Truncate(time.Second),
		Spec: *spec, Mounts: map[string]int{"a": 2, "b": 1}}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(s.VolumesDir(), "vol1", "volume.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := s.Load("vol1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
	}
	if got.MountCount() != 3 {
		t.Errorf("mount count %d", got.MountCount())
	}
	if err := s.Save(&Record{Name: "vol0", ID: "fedcba9876543210"}); err != nil {
		t.Fatal(err)
	}
	// A leftover temp file and a foreign directory are ignored by List.
	os.WriteFile(filepath.Join(s.VolumesDir(), "vol1", ".volume.json.tmp-1"), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(s.VolumesDir(), "..bad"), 0o700)
	list, errs := s.List()
	if len(errs) != 0 || len(list) != 2 || list[0].Name != "vol0" || list[1].Name != "vol1" {
		t.Fatalf("List = %v, %v", list, errs)
	}
	if err := s.Delete("vol1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load("vol1"); !os.IsNotExist(err) {
		t.Errorf("load after delete: %v", err)
	}
	// A corrupt record is reported, not fatal.
	os.MkdirAll(filepath.Join(s.VolumesDir(), "broken"), 0o700)
	os.WriteFile(filepath.Join(s.VolumesDir(), "broken", "volume.json"), []byte("{"), 0o600)
	list, errs = s.List()
	if len(list) != 1 || len(errs) != 1 {
		t.Errorf("List with a corrupt record = %v, %v", list, errs)
	}
}

package zstor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestHookEventsWithoutBackends covers the events that need no backend:
// ready/close succeed without a config, a missing config fails the others,
// zdbfs-temp is skipped before anything is contacted, unknown events fail.
func TestHookEventsWithoutBackends(t *testing.T) {
	t.Setenv(EnvConfig, "")
	t.Setenv(EnvIndexDir, t.TempDir())
	for _, ev := range []string{"ready", "close", "crash", "namespace-deleted", "namespace-reloaded"} {
		if rc := HookMain([]string{ev, "tcp://[::]:9900"}); rc != 0 {
			t.Errorf("%s: exit %d, want 0", ev, rc)
		}
	}
	if rc := HookMain([]string{"jump-data", "id", "/x/d0", "/x/d1"}); rc != 1 {
		t.Errorf("jump-data without %s: exit %d, want 1", EnvConfig, rc)
	}
	if rc := HookMain([]string{"ready"}); rc != 2 {
		t.Errorf("missing instance id: exit %d, want 2", rc)
	}

	// A valid config whose backends are unreachable: skipped events must
	// still succeed, because nothing is sent for zdbfs-temp.
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "zstor.toml")
	data, err := os.ReadFile("config/testdata/official.toml")
	if err != nil {
		t.Fatal(err)
	}
	// Loopback addresses only (nothing listens there), in case a change
	// ever makes these events contact a backend.
	n := 0
	data = regexp.MustCompile(`address = "[^"]*"`).ReplaceAllFunc(data, func([]byte) []byte {
		n++
		return []byte(fmt.Sprintf(`address = "127.0.0.1:%d"`, n))
	})
	data = bytes.ReplaceAll(data, []byte(`socket = "/var/run/zstor.sock"`), []byte(`socket = "`+filepath.Join(dir, "none.sock")+`"`))
	os.WriteFile(cfgPath, data, 0o600)
	t.Setenv(EnvConfig, cfgPath)
	for _, args := range [][]string{
		{"namespace-created", "id", "zdbfs-temp"},
		{"namespace-updated", "id", "zdbfs-temp"},
		{"jump-data", "id", "/data/data/zdbfs-temp/d3", "/data/data/zdbfs-temp/d4"},
		{"jump-index", "id", "/data/index/zdbfs-temp/i3", "/data/index/zdbfs-temp/i4", "1 2"},
		{"namespace-closing", "id", "zdbfs-temp", "/i", "/d", ""},
	} {
		if rc := HookMain(args); rc != 0 {
			t.Errorf("%v: exit %d, want 0 (zdbfs-temp is never archived)", args, rc)
		}
	}
	if rc := HookMain([]string{"no-such-event", "id"}); rc != 1 {
		t.Errorf("unknown event: exit %d, want 1", rc)
	}

	// namespaces-init with unreachable backends: after the retry budget it
	// fails, leaves a marker, and ready then stops zdb; a later successful
	// restore (here: the marker removed) lets it start.
	idx := filepath.Join(dir, "index")
	t.Setenv(EnvIndexDir, idx)
	t.Setenv(EnvRestoreTimeout, "1ms")
	t.Setenv(EnvNamespaces, "zdbfs-data")
	if rc := HookMain([]string{"namespaces-init", "id", idx, filepath.Join(dir, "data")}); rc != 1 {
		t.Errorf("namespaces-init with dead backends: exit %d, want 1", rc)
	}
	if got := incompleteRestores(idx); len(got) != 1 || got[0] != "zdbfs-data" {
		t.Fatalf("incomplete restores %v, want [zdbfs-data]", got)
	}
	if rc := HookMain([]string{"ready", "id"}); rc != 1 {
		t.Errorf("ready after a failed restore: exit %d, want 1", rc)
	}
	os.Remove(restoreMarker(idx, "zdbfs-data"))
	if rc := HookMain([]string{"ready", "id"}); rc != 0 {
		t.Errorf("ready: exit %d, want 0", rc)
	}
}

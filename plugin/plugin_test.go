package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/driver"
	"github.com/qsfs/qsfs/driver/drivertest"
)

func TestMain(m *testing.M) {
	drivertest.RunIfFake()
	os.Exit(m.Run())
}

type server struct {
	sock string
	d    *driver.Driver
	http *http.Client
}

func startServer(t *testing.T) *server {
	t.Helper()
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	os.MkdirAll(bin, 0o755)
	prog := func(which string) []string {
		p, err := drivertest.Program(bin, which)
		if err != nil {
			t.Fatal(err)
		}
		return []string{p}
	}
	self, _ := os.Executable()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	d, err := driver.New(driver.Config{
		StateRoot: filepath.Join(root, "state"), MountRoot: filepath.Join(root, "mnt"),
		Self: self, Programs: driver.Programs{Zdb: prog("zdb"), Zdbfs: prog("zdbfs"), Zstor: prog("zstor")},
		MountTimeout: 15 * time.Second, StopTimeout: 5 * time.Second, Log: log,
		Reaper: driver.ReaperConfig{CheckPeriod: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "qsfs.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go NewHandler(d).Serve(l)
	t.Cleanup(func() {
		l.Close()
		d.Shutdown(5 * time.Second)
	})
	return &server{sock: sock, d: d, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dd net.Dialer
			return dd.DialContext(ctx, "unix", sock)
		}}}}
}

// call posts body to path and returns the status code and decoded JSON.
func (s *server) call(t *testing.T, path string, body any) (int, map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	if str, ok := body.(string); ok {
		buf.WriteString(str)
	} else {
		json.NewEncoder(&buf).Encode(body)
	}
	req, _ := http.NewRequest("POST", "http://plugin"+path, &buf)
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(data, &out); err != nil {
		out["raw"] = string(data)
	}
	return resp.StatusCode, out
}

func errOf(m map[string]any) string { s, _ := m["Err"].(string); return s }

func TestEndpoints(t *testing.T) {
	s := startServer(t)
	code, r := s.call(t, "/Plugin.Activate", map[string]any{})
	if code != 200 || !strings.Contains(toJSON(r), "VolumeDriver") {
		t.Fatalf("activate: %d %v", code, r)
	}
	code, r = s.call(t, "/VolumeDriver.Capabilities", map[string]any{})
	if code != 200 || toJSON(r["Capabilities"]) != `{"Scope":"local"}` {
		t.Errorf("capabilities: %d %v", code, r)
	}
	// Create: success, errors naming the key, invalid names, malformed JSON.
	if code, r = s.call(t, "/VolumeDriver.Create", map[string]any{"Name": "h1", "Opts": map[string]string{"cache": "1G"}}); code != 200 || errOf(r) != "" {
		t.Fatalf("create: %d %v", code, r)
	}
	for _, c := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"Name": "h2", "Opts": map[string]string{"bogus": "1"}}, `option "bogus"`},
		{map[string]any{"Name": "h2", "Opts": map[string]string{"minimal_shards": "x"}}, `option "minimal_shards"`},
		{map[string]any{"Name": "../etc"}, "invalid"},
	} {
		code, r = s.call(t, "/VolumeDriver.Create", c.body)
		if code != 500 || !strings.Contains(errOf(r), c.want) {
			t.Errorf("create %v: %d %v", c.body, code, r)
		}
	}
	if code, _ = s.call(t, "/VolumeDriver.Create", "{not json"); code != 400 {
		t.Errorf("malformed create: %d", code)
	}
	// Get, List, Path.
	code, r = s.call(t, "/VolumeDriver.Get", map[string]any{"Name": "h1"})
	vol, _ := r["Volume"].(map[string]any)
	if code != 200 || vol["Name"] != "h1" || vol["Status"].(map[string]any)["state"] != "created" {
		t.Errorf("get: %d %v", code, r)
	}
	if _, err := time.Parse(time.RFC3339, vol["CreatedAt"].(string)); err != nil {
		t.Errorf("CreatedAt: %v", err)
	}
	if code, r = s.call(t, "/VolumeDriver.Get", map[string]any{"Name": "nope"}); code != 500 || !strings.Contains(errOf(r), "no such volume") {
		t.Errorf("get missing: %d %v", code, r)
	}
	code, r = s.call(t, "/VolumeDriver.List", map[string]any{})
	if code != 200 || len(r["Volumes"].([]any)) != 1 {
		t.Errorf("list: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Path", map[string]any{"Name": "h1"}); code != 200 || r["Mountpoint"] != "" {
		t.Errorf("path unmounted: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Path", map[string]any{"Name": "nope"}); code != 500 {
		t.Errorf("path missing: %d %v", code, r)
	}
	// Mount and Unmount errors for a missing volume.
	if code, r = s.call(t, "/VolumeDriver.Mount", map[string]any{"Name": "nope", "ID": "x"}); code != 500 || errOf(r) == "" {
		t.Errorf("mount missing: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Unmount", map[string]any{"Name": "nope", "ID": "x"}); code != 500 || errOf(r) == "" {
		t.Errorf("unmount missing: %d %v", code, r)
	}
	// qsfs endpoints.
	code, r = s.call(t, StatusPath, StatusRequest{Name: "h1"})
	if code != 200 || r["Status"].(map[string]any)["name"] != "h1" {
		t.Errorf("status: %d %v", code, r)
	}
	if code, r = s.call(t, StatusPath, StatusRequest{Name: "nope"}); code != 500 || errOf(r) == "" {
		t.Errorf("status missing: %d %v", code, r)
	}
	if code, r = s.call(t, UpdatePath, UpdateRequest{Name: "h1", Opts: map[string]string{"cache": "2G"}}); code != 200 || r["Message"] == "" {
		t.Errorf("update: %d %v", code, r)
	}
	if code, r = s.call(t, UpdatePath, UpdateRequest{Name: "h1", Opts: map[string]string{"bogus": "2"}}); code != 500 || !strings.Contains(errOf(r), `"bogus"`) {
		t.Errorf("update bad key: %d %v", code, r)
	}
	if code, r = s.call(t, UpdatePath, "{"); code != 500 || errOf(r) == "" {
		t.Errorf("update malformed: %d %v", code, r)
	}
	// Remove, then it is gone; removing again fails.
	if code, r = s.call(t, "/VolumeDriver.Remove", map[string]any{"Name": "h1"}); code != 200 || errOf(r) != "" {
		t.Errorf("remove: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Remove", map[string]any{"Name": "h1"}); code != 500 {
		t.Errorf("remove twice: %d %v", code, r)
	}
	if code, r = s.call(t, UpdatePath, UpdateRequest{Name: "h1", Opts: map[string]string{"cache": "2G"}}); code != 500 || errOf(r) == "" {
		t.Errorf("update removed: %d %v", code, r)
	}
}

func TestMountOverSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE mounts")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	s := startServer(t)
	s.call(t, "/VolumeDriver.Create", map[string]any{"Name": "m1"})
	code, r := s.call(t, "/VolumeDriver.Mount", map[string]any{"Name": "m1", "ID": "c1"})
	if code != 200 || r["Mountpoint"] == nil {
		t.Fatalf("mount: %d %v", code, r)
	}
	mp := r["Mountpoint"].(string)
	if code, r = s.call(t, "/VolumeDriver.Path", map[string]any{"Name": "m1"}); r["Mountpoint"] != mp {
		t.Errorf("path: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Remove", map[string]any{"Name": "m1"}); code != 500 || !strings.Contains(errOf(r), "in use") {
		t.Errorf("remove mounted: %d %v", code, r)
	}
	c := NewClient(s.sock)
	st, err := c.Status("m1")
	if err != nil || st.State != "mounted" || st.Mounts != 1 {
		t.Errorf("client status: %+v %v", st, err)
	}
	var table bytes.Buffer
	st.FormatTable(&table)
	if !strings.Contains(table.String(), "STATE") || !strings.Contains(table.String(), "mounted") {
		t.Errorf("table:\n%s", table.String())
	}
	// An orphaned ID (engine crashed before Unmount) is dropped by
	// /Qsfs.ForgetMounts, which stops the filesystem.
	s.call(t, "/VolumeDriver.Mount", map[string]any{"Name": "m1", "ID": "orphan"})
	if code, r = s.call(t, ForgetPath, StatusRequest{Name: "m1"}); code != 200 || r["Dropped"] != float64(2) {
		t.Errorf("forget mounts: %d %v", code, r)
	}
	if code, r = s.call(t, ForgetPath, StatusRequest{Name: "nope"}); code != 500 || errOf(r) == "" {
		t.Errorf("forget mounts of a missing volume: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Unmount", map[string]any{"Name": "m1", "ID": "c1"}); code != 200 {
		t.Errorf("unmount: %d %v", code, r)
	}
	if code, r = s.call(t, "/VolumeDriver.Remove", map[string]any{"Name": "m1"}); code != 200 {
		t.Errorf("remove: %d %v", code, r)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	l1, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(sock); err == nil {
		t.Fatal("second listener on a live socket accepted")
	}
	l1.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket not removed on close: %v", err)
	}
	// A stale socket file (nobody listening) is replaced.
	l, _ := net.Listen("unix", sock)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestLoadSettings(t *testing.T) {
	env := map[string]string{
		"QSFS_STATE_ROOT": "/s", "QSFS_DEBUG": "1", "QSFS_REAPER_PERIOD": "30s",
		"QSFS_REAPER_UPLOAD_LIMIT": "1M", "QSFS_OPT_MINIMAL_SHARDS": "2", "QSFS_OPT_Groups": "x",
		"QSFS_ISOLATION": "off", "QSFS_METRICS_ADDR": "", "QSFS_ZDBFS_URING": "off",
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	s, err := LoadSettings(func(k string) string { return env[k] }, environ)
	if err != nil {
		t.Fatal(err)
	}
	if s.StateRoot != "/s" || s.MountRoot != "/mnt/volumes" || s.LogLevel != logrus.DebugLevel ||
		s.Reaper.CheckPeriod != 30*time.Second || s.Reaper.UploadLimit != 1<<20 || s.Isolation || s.MetricsAddr != "" ||
		s.ZdbfsURing != "off" {
		t.Errorf("settings: %+v", s)
	}
	if s.Defaults["minimal_shards"] != "2" || s.Defaults["groups"] != "x" {
		t.Errorf("defaults: %v", s.Defaults)
	}
	for k, v := range map[string]string{"QSFS_MOUNT_TIMEOUT": "soon", "QSFS_ISOLATION": "maybe", "QSFS_SUBNET4": "fd00::/64", "QSFS_LOG_LEVEL": "loud", "QSFS_ZDBFS_URING": "yes"} {
		if _, err := LoadSettings(func(key string) string {
			if key == k {
				return v
			}
			return ""
		}, nil); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
	d, _ := LoadSettings(func(string) string { return "" }, nil)
	if d.MetricsAddr != ":9190" || d.Socket != "/run/docker/plugins/qsfs.sock" || !d.Isolation || d.ZdbfsURing != "auto" {
		t.Errorf("defaults: %+v", d)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

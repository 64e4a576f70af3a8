package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/driver/drivertest"
	"github.com/qsfs/qsfs/netns"
)

func TestMain(m *testing.M) {
	drivertest.RunIfFake()
	os.Exit(m.Run())
}

type testEnv struct {
	root string
	cfg  Config
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	prog := func(which string) []string {
		p, err := drivertest.Program(bin, which)
		if err != nil {
			t.Fatal(err)
		}
		return []string{p}
	}
	self, _ := os.Executable()
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	return &testEnv{root: root, cfg: Config{
		StateRoot: filepath.Join(root, "state"), MountRoot: filepath.Join(root, "mnt"),
		SecretsDir: filepath.Join(root, "secrets"), Self: self,
		Programs:     Programs{Zdb: prog("zdb"), Zdbfs: prog("zdbfs"), Zstor: prog("zstor")},
		Isolation:    NoIsolation{},
		MountTimeout: 15 * time.Second, StopTimeout: 5 * time.Second, DrainTimeout: 5 * time.Second,
		Reaper:     ReaperConfig{CheckPeriod: time.Hour},
		ZstorWorks: func() bool { return true },
		Log:        log,
	}}
}

func (e *testEnv) driver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(5 * time.Second) })
	return d
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE mounts")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

func mounted(t *testing.T, path string) string {
	t.Helper()
	fs, err := MountedFS("/proc/self/mountinfo", path)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestCreateGetListRemove(t *testing.T) {
	e := newEnv(t)
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "v1", Options: map[string]string{"cache": "1G"}}); err != nil {
		t.Fatal(err)
	}
	g, err := d.Get(&volume.GetRequest{Name: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Volume.Name != "v1" || g.Volume.Mountpoint != "" || g.Volume.Status["state"] != StateCreated {
		t.Errorf("get: %+v", g.Volume)
	}
	if _, err := time.Parse(time.RFC3339, g.Volume.CreatedAt); err != nil {
		t.Errorf("CreatedAt %q: %v", g.Volume.CreatedAt, err)
	}
	id := g.Volume.Status["id"].(string)
	// Create of an existing name is a no-op, whatever the options.
	if err := d.Create(&volume.CreateRequest{Name: "v1", Options: map[string]string{"cache": "5G"}}); err != nil {
		t.Fatal(err)
	}
	g, _ = d.Get(&volume.GetRequest{Name: "v1"})
	if g.Volume.Status["id"] != id || g.Volume.Status["backends"].(map[string]any)["cache"] != "1GiB" {
		t.Errorf("re-create changed the volume: %+v", g.Volume.Status)
	}
	l, _ := d.List()
	if len(l.Volumes) != 1 || l.Volumes[0].Name != "v1" {
		t.Errorf("list: %+v", l.Volumes)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(&volume.GetRequest{Name: "v1"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after remove: %v", err)
	}
	// The name can be created again at once and gets a new id.
	if err := d.Create(&volume.CreateRequest{Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	g, _ = d.Get(&volume.GetRequest{Name: "v1"})
	if g.Volume.Status["id"] == id {
		t.Errorf("re-created volume kept id %s", id)
	}
}

func TestCreateRejects(t *testing.T) {
	e := newEnv(t)
	d := e.driver(t)
	for _, req := range []*volume.CreateRequest{
		{Name: "../x"}, {Name: "a/b"}, {Name: ""},
		{Name: "ok1", Options: map[string]string{"nope": "1"}},
		{Name: "ok2", Options: map[string]string{"cache": "x"}},
	} {
		if err := d.Create(req); err == nil {
			t.Errorf("Create(%+v) accepted", req)
		}
	}
	entries, _ := os.ReadDir(d.Store().VolumesDir())
	if len(entries) != 0 {
		t.Errorf("rejected creates wrote state: %v", entries)
	}
	for _, name := range []string{"../x", "nope"} {
		if _, err := d.Get(&volume.GetRequest{Name: name}); err == nil {
			t.Errorf("Get(%q) succeeded", name)
		}
	}
}

func TestMountMultiset(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "mv"}); err != nil {
		t.Fatal(err)
	}
	mount := func(id string) string {
		t.Helper()
		r, err := d.Mount(&volume.MountRequest{Name: "mv", ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return r.Mountpoint
	}
	unmount := func(id string) {
		t.Helper()
		if err := d.Unmount(&volume.UnmountRequest{Name: "mv", ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	mp := mount("A")
	if mp != filepath.Join(e.cfg.MountRoot, "mv") || mounted(t, mp) != "fuse.zdbfs" {
		t.Fatalf("mountpoint %s: %q", mp, mounted(t, mp))
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	mount("A") // docker cp repeats the container's ID
	mount("B")
	if n := d.statusOf(d.vols["mv"], false).Mounts; n != 3 {
		t.Errorf("mounts %d, want 3", n)
	}
	unmount("A")
	unmount("A")
	unmount("unknown") // ignored
	if mounted(t, mp) != "fuse.zdbfs" {
		t.Fatal("unmounted while B still holds it")
	}
	unmount("B")
	if fs := mounted(t, mp); fs != "" {
		t.Fatalf("still mounted after the last unmount: %s", fs)
	}
	st := d.statusOf(d.vols["mv"], false)
	if st.State != StateStopped || st.Mounts != 0 {
		t.Errorf("status after last unmount: %+v", st)
	}
	mp = mount("C")
	data, err := os.ReadFile(filepath.Join(mp, "f"))
	if err != nil || string(data) != "hello" {
		t.Errorf("data after remount: %q, %v", data, err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "mv"}); !errors.Is(err, ErrInUse) {
		t.Errorf("remove of a mounted volume: %v", err)
	}
	unmount("C")
	if err := d.Remove(&volume.RemoveRequest{Name: "mv"}); err != nil {
		t.Fatal(err)
	}
}

func TestMountFailureLeavesNothing(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	fail, err := drivertest.Program(filepath.Join(e.root, "bin"), "fail")
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Programs.Zdbfs = []string{fail}
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "bad"}); err != nil {
		t.Fatal(err)
	}
	_, err = d.Mount(&volume.MountRequest{Name: "bad", ID: "x"})
	if err == nil {
		t.Fatal("mount succeeded")
	}
	if !strings.Contains(err.Error(), "cannot open backend") || !strings.Contains(err.Error(), "zdbfs") {
		t.Errorf("error lacks the failing process's output: %v", err)
	}
	mp := filepath.Join(e.cfg.MountRoot, "bad")
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("mountpoint left behind: %v", err)
	}
	g, _ := d.Get(&volume.GetRequest{Name: "bad"})
	if g.Volume.Status["state"] != StateFailed || g.Volume.Status["mounts"] != 0 {
		t.Errorf("status: %+v", g.Volume.Status)
	}
	if _, err := os.Stat(d.Store().DataDir(g.Volume.Status["id"].(string))); !os.IsNotExist(err) {
		t.Errorf("data directory left behind: %v", err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "bad"}); err != nil {
		t.Errorf("remove after failed mount: %v", err)
	}
}

func TestRestartRestoresMounts(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	d1, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.Create(&volume.CreateRequest{Name: "rv"}); err != nil {
		t.Fatal(err)
	}
	if err := d1.Create(&volume.CreateRequest{Name: "idle1"}); err != nil {
		t.Fatal(err)
	}
	r, err := d1.Mount(&volume.MountRequest{Name: "rv", ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(r.Mountpoint, "kept"), []byte("yes"), 0o644)
	d1.Shutdown(5 * time.Second)
	if mounted(t, r.Mountpoint) != "" {
		t.Fatal("shutdown left the mount")
	}
	d2 := e.driver(t)
	l, _ := d2.List()
	if len(l.Volumes) != 2 {
		t.Fatalf("second driver lists %+v", l.Volumes)
	}
	g, _ := d2.Get(&volume.GetRequest{Name: "rv"})
	if g.Volume.Status["mounts"] != 1 {
		t.Errorf("mount count not persisted: %+v", g.Volume.Status)
	}
	d2.Restore()
	deadline := time.Now().Add(15 * time.Second)
	for mounted(t, r.Mountpoint) != "fuse.zdbfs" {
		if time.Now().After(deadline) {
			t.Fatal("restore did not mount")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(r.Mountpoint, "kept")); err != nil || string(b) != "yes" {
		t.Errorf("data after restart: %q %v", b, err)
	}
	if err := d2.Unmount(&volume.UnmountRequest{Name: "rv", ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if mounted(t, r.Mountpoint) != "" {
		t.Error("unmount after restart left the mount")
	}
}

func TestUpdateReloadsZstor(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "uv", Options: archivedOpts()}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "uv", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	st, _ := d.VolumeStatus("uv")
	if !strings.HasPrefix(st.Processes["zstor"], "running") {
		t.Fatalf("zstor not running: %+v", st.Processes)
	}
	if _, err := d.Update("uv", map[string]string{"colour": "red"}); err == nil {
		t.Error("update with an unknown key accepted")
	}
	msg, err := d.Update("uv", map[string]string{"expected_shards": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "SIGUSR1") {
		t.Errorf("message %q", msg)
	}
	toml := filepath.Join(d.Store().DataDir(st.ID), "zstor.toml")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(toml + ".reloaded"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("zstor did not get SIGUSR1")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(toml)
	if !strings.Contains(string(b), "expected_shards = 3") {
		t.Errorf("zstor.toml not rewritten:\n%s", b)
	}
	if fi, _ := os.Stat(toml); fi.Mode().Perm() != 0o600 {
		t.Errorf("zstor.toml mode %v", fi.Mode().Perm())
	}
	// Unmounted, the volume stays idle with zstor running (uploads).
	if err := d.Unmount(&volume.UnmountRequest{Name: "uv", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	st, _ = d.VolumeStatus("uv")
	if st.State != StateIdle || !strings.HasPrefix(st.Processes["zstor"], "running") {
		t.Errorf("after unmount: %+v", st)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "uv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Update("uv", map[string]string{"expected_shards": "4"}); err == nil {
		t.Error("update of a removed volume accepted")
	}
}

// fakeIsolation stands in for network namespaces: no namespace, constant
// counters (a quiet volume), and a record of teardowns.
type fakeIsolation struct {
	NoIsolation
	torn chan string
}

func (f *fakeIsolation) Enabled() bool { return true }

func (f *fakeIsolation) Counters(string) (netns.Counters, error) {
	return netns.Counters{TxBytes: 1000, TxPackets: 10}, nil
}

func (f *fakeIsolation) Teardown(id string) error {
	select {
	case f.torn <- id:
	default:
	}
	return nil
}

func TestTombstoneAndReaper(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	iso := &fakeIsolation{torn: make(chan string, 4)}
	e.cfg.Isolation = iso
	e.cfg.Reaper = ReaperConfig{CheckPeriod: 300 * time.Millisecond, UploadLimit: 1 << 20, FailureThreshold: 2}
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "tv", Options: archivedOpts()}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "tv", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "tv", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	st, _ := d.VolumeStatus("tv")
	oldID := st.ID
	if err := d.Remove(&volume.RemoveRequest{Name: "tv"}); err != nil {
		t.Fatal(err)
	}
	// The name is free at once; the old volume waits as a tombstone.
	if _, err := d.Update("tv", map[string]string{"cache": "1G"}); !errors.Is(err, ErrTombstoned) {
		t.Errorf("update of a tombstoned volume: %v", err)
	}
	if st, err := d.VolumeStatus("tv"); err != nil || !st.Tombstoned {
		t.Errorf("status of a tombstoned volume: %+v %v", st, err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "tv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Store().TombstoneDir(), oldID+".json")); err != nil {
		t.Fatalf("tombstone missing: %v", err)
	}
	d.Restore() // starts the reaper
	select {
	case id := <-iso.torn:
		if id != oldID {
			t.Errorf("tore down %s, want %s", id, oldID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reaper did not tear down the quiet volume")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errT := os.Stat(filepath.Join(d.Store().TombstoneDir(), oldID+".json"))
		_, errD := os.Stat(d.Store().DataDir(oldID))
		if os.IsNotExist(errT) && os.IsNotExist(errD) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: tombstone %v, data %v", errT, errD)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if g, err := d.Get(&volume.GetRequest{Name: "tv"}); err != nil || g.Volume.Status["id"] == oldID {
		t.Errorf("new volume: %+v %v", g, err)
	}
}

func TestIdleStackStopsWhenQuiet(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	iso := &fakeIsolation{torn: make(chan string, 4)}
	e.cfg.Isolation = iso
	e.cfg.Reaper = ReaperConfig{CheckPeriod: 200 * time.Millisecond, UploadLimit: 1 << 20}
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "iv"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Mount(&volume.MountRequest{Name: "iv", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "iv", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.VolumeStatus("iv"); st.State != StateIdle {
		t.Fatalf("after unmount: %s, want idle", st.State)
	}
	d.Restore() // starts the idle watch
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := d.VolumeStatus("iv")
		if st.State == StateStopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle stack not stopped: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-iso.torn:
	default:
		t.Error("namespace of the idle volume not torn down")
	}
	// It mounts again from stopped.
	if _, err := d.Mount(&volume.MountRequest{Name: "iv", ID: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "iv", ID: "b"}); err != nil {
		t.Fatal(err)
	}
}

func TestSupervisorRestartsDeadProcesses(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "sv"}); err != nil {
		t.Fatal(err)
	}
	r, err := d.Mount(&volume.MountRequest{Name: "sv", ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unmount(&volume.UnmountRequest{Name: "sv", ID: "a"})
	_, _, _, st := d.vols["sv"].snapshot()
	for _, p := range []*Process{st.zdb, st.zdbfs} {
		pid := p.Status().Pid
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			s := p.Status()
			if s.Running && s.Pid != pid && s.Restarts == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not restarted: %+v", p.Name, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The restarted zdbfs serves the mountpoint again.
	deadline := time.Now().Add(15 * time.Second)
	for mounted(t, r.Mountpoint) != "fuse.zdbfs" {
		if time.Now().After(deadline) {
			t.Fatal("mount not back after zdbfs restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	g, _ := d.Get(&volume.GetRequest{Name: "sv"})
	if !strings.Contains(fmt.Sprint(g.Volume.Status["processes"]), "1 restarts") {
		t.Errorf("status does not show the restart: %v", g.Volume.Status["processes"])
	}
}

// A slow Mount holds only its own volume's lock: Get, List, Create and
// Remove of other volumes, and Get of the mounting one, answer meanwhile.
func TestSlowMountBlocksNobodyElse(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	gate := filepath.Join(e.root, "gate")
	slow, err := drivertest.GatedProgram(filepath.Join(e.root, "bin"), gate)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Programs.Zdbfs = []string{slow}
	e.cfg.MountTimeout = time.Minute
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "slow"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Mount(&volume.MountRequest{Name: "slow", ID: "a"})
		done <- err
	}()
	for {
		g, err := d.Get(&volume.GetRequest{Name: "slow"})
		if err != nil {
			t.Fatal(err)
		}
		if g.Volume.Status["state"] == StateStarting {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The Mount is blocked on the gate; everything else goes on.
	if err := d.Create(&volume.CreateRequest{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if l, err := d.List(); err != nil || len(l.Volumes) != 2 {
		t.Fatalf("list during a slow mount: %v %v", l, err)
	}
	if err := d.Remove(&volume.RemoveRequest{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("mount finished before the gate opened: %v", err)
	default:
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(&volume.UnmountRequest{Name: "slow", ID: "a"}); err != nil {
		t.Fatal(err)
	}
}

// TestZdbfsURingSetting: QSFS_ZDBFS_URING=off reaches zdbfs as -o uring=off;
// the default (auto) passes nothing, so an official zdbfs still runs.
func TestZdbfsURingSetting(t *testing.T) {
	requireFUSE(t)
	for _, c := range []struct{ setting, want string }{{"off", "uring=off"}, {"", ""}} {
		e := newEnv(t)
		e.cfg.ZdbfsURing = c.setting
		d := e.driver(t)
		if err := d.Create(&volume.CreateRequest{Name: "uv"}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Mount(&volume.MountRequest{Name: "uv", ID: "A"}); err != nil {
			t.Fatal(err)
		}
		pid := d.vols["uv"].stack.zdbfs.Status().Pid
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		has := strings.Contains(string(cmdline), "uring=")
		if c.want != "" && !strings.Contains(string(cmdline), c.want) || c.want == "" && has {
			t.Errorf("setting %q: zdbfs command line %q", c.setting, strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
		if err := d.Unmount(&volume.UnmountRequest{Name: "uv", ID: "A"}); err != nil {
			t.Fatal(err)
		}
	}
}

package driver

// End-to-end archive tests with the real parts: backends are `qsfs zdb`
// processes on this host's address, and each volume's stack (zstor, zdb with
// the hook, zdbfs) runs in its own network namespace as in production.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/zdb/client"
)

// archiveEnv is a set of local backends plus what a driver needs to run
// archived volumes in namespaces.
type archiveEnv struct {
	bin    string
	root   string
	opts   map[string]string // groups, meta, shards, key
	subnet int
}

func requireArchiveEnv(t *testing.T) *archiveEnv {
	t.Helper()
	requireFUSE(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables")
	}
	host := hostIP(t)
	bin := testbin.Path(t)
	root := t.TempDir()
	meta := startBackend(t, bin, filepath.Join(root, "backend-meta"), "user", host, "m1", "m2", "m3", "m4")
	data := startBackend(t, bin, filepath.Join(root, "backend-data"), "seq", host, "d1", "d2", "d3", "d4")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return &archiveEnv{
		bin: bin, root: root, subnet: os.Getpid() % 250,
		opts: map[string]string{
			"groups":          fmt.Sprintf("%s/d1,%s/d2;%s/d3,%s/d4", data, data, data, data),
			"meta":            fmt.Sprintf("%s/m1,%s/m2,%s/m3,%s/m4", meta, meta, meta, meta),
			"minimal_shards":  "2",
			"expected_shards": "4",
			"encryption_key":  hex.EncodeToString(key),
		},
	}
}

// hostIP returns this host's global IPv4 address, which a volume's
// namespace reaches through its veth (loopback is the namespace's own).
func hostIP(t *testing.T) string {
	t.Helper()
	c, err := net.Dial("udp4", "192.0.2.123:9")
	if err != nil {
		t.Skipf("no IPv4 route for backends on this host: %v", err)
	}
	defer c.Close()
	ip := c.LocalAddr().(*net.UDPAddr).IP
	if ip.IsLoopback() || ip.IsUnspecified() {
		t.Skip("no global IPv4 address on this host for the backends")
	}
	return ip.String()
}

// startBackend runs a `qsfs zdb` backend in mode with namespaces and
// returns its address; it is stopped at the end of the test.
func startBackend(t *testing.T, bin, dir, mode, host string, namespaces ...string) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	var out bytes.Buffer
	cmd := exec.Command(bin, "zdb", "--mode", mode, "--listen", host, "--port", strconv.Itoa(int(port)),
		"--data", filepath.Join(dir, "data"), "--index", filepath.Join(dir, "index"))
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start backend zdb: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	var c *client.Conn
	waitUntil(t, 20*time.Second, "backend "+addr+" answers", func() bool {
		select {
		case <-done:
			t.Fatalf("backend zdb on %s exited: %s", addr, out.String())
		default:
		}
		c, err = client.Dial("tcp", addr, time.Second)
		return err == nil
	})
	defer c.Close()
	for _, ns := range namespaces {
		if _, err := c.Do("NSNEW", ns); err != nil {
			t.Fatalf("backend %s: NSNEW %s: %v", addr, ns, err)
		}
	}
	return addr
}

// driver returns a driver whose volumes run in namespaces under stateRoot,
// with a small zdb data file size so files rotate often. stop ends it (also
// at the end of the test).
func (a *archiveEnv) driver(t *testing.T, name string) (d *Driver, stop func()) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	d, err := New(Config{
		StateRoot: filepath.Join(a.root, name, "state"), MountRoot: filepath.Join(a.root, name, "mnt"),
		SecretsDir: filepath.Join(a.root, "secrets"), Self: a.bin,
		Isolation: &NetnsIsolation{Self: a.bin,
			Subnet4: netip.MustParsePrefix(fmt.Sprintf("100.124.%d.0/24", a.subnet)),
			Subnet6: netip.MustParsePrefix(fmt.Sprintf("fd8c:5f0d:%x::/48", 0x9a00+a.subnet))},
		MountTimeout: 90 * time.Second, StopTimeout: 30 * time.Second, DrainTimeout: 60 * time.Second,
		ZdbDataSize: 1 << 20,
		Reaper:      ReaperConfig{CheckPeriod: time.Hour},
		Log:         log,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			d.Shutdown(60 * time.Second)
			for id := range d.Names() {
				_ = d.iso.Teardown(id)
			}
		}
	}
	t.Cleanup(stop)
	return d, stop
}

func (a *archiveEnv) options(kv ...string) map[string]string {
	return with(a.opts, kv...)
}

func waitUntil(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func dropCaches(t *testing.T) {
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		t.Logf("drop caches: %v (reads may come from the page cache)", err)
	}
}

func writeRandom(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, int64(n)); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// treeEntry is what must survive: type, mode, size, content hash, link.
type treeEntry struct {
	Mode fs.FileMode
	Size int64
	Hash string
	Link string
}

// snapshotTree describes every entry under root by its relative path.
func snapshotTree(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		te := treeEntry{Mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			te.Size, te.Hash = n, hex.EncodeToString(h.Sum(nil))
		case fi.Mode()&fs.ModeSymlink != 0:
			te.Link, err = os.Readlink(p)
			if err != nil {
				return err
			}
		}
		out[rel] = te
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func compareTrees(t *testing.T, want, got map[string]treeEntry) {
	t.Helper()
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if g, ok := got[n]; !ok {
			t.Errorf("%s: missing", n)
		} else if g != want[n] {
			t.Errorf("%s: got %+v, want %+v", n, g, want[n])
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("%s: unexpected entry", n)
		}
	}
}

// dataFiles returns the total size and ids of zdbfs-data's data files.
func dataFiles(dir string) (int64, map[int]bool) {
	ids := map[int]bool{}
	var total int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		id, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "d"))
		if err != nil || !strings.HasPrefix(e.Name(), "d") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			total += fi.Size()
			ids[id] = true
		}
	}
	return total, ids
}

func metricValue(text, name string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			f := strings.Fields(rest)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

func mountVol(t *testing.T, d *Driver, name, id string) string {
	t.Helper()
	r, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.Mountpoint
}

func unmountVol(t *testing.T, d *Driver, name, id string) {
	t.Helper()
	if err := d.Unmount(&volume.UnmountRequest{Name: name, ID: id}); err != nil {
		t.Fatal(err)
	}
}

// TestArchiveEvictAndFetchBack writes several times the local data limit
// through a mounted volume, waits until zstor evicted stored data files,
// then reads everything back through a fresh zdbfs (empty block cache), so
// the reads go to zdb, whose missing-data hook fetches the evicted files.
func TestArchiveEvictAndFetchBack(t *testing.T) {
	a := requireArchiveEnv(t)
	t.Setenv("QSFS_ZSTOR_EVICT_INTERVAL", "300ms")
	d, _ := a.driver(t, "host")
	const capMiB = 2
	if err := d.Create(&volume.CreateRequest{Name: "ev", Options: a.options(
		"max_zdb_data_dir_size", strconv.Itoa(capMiB), "rotate", "2s")}); err != nil {
		t.Fatal(err)
	}
	mp := mountVol(t, d, "ev", "c1")
	st := d.statusOf(d.vols["ev"], false)
	if !strings.HasPrefix(st.Namespace, "qfs-ns-") {
		t.Fatalf("stack not in its namespace: %+v", st)
	}
	const files, size = 8, 3 << 20 // 24 MiB, 12 times the cap
	for i := 0; i < files; i++ {
		writeRandom(t, filepath.Join(mp, fmt.Sprintf("blob%d", i)), size)
	}
	want := snapshotTree(t, mp)
	dataDir := filepath.Join(d.store.DataDir(st.ID), "zdb", "data", "zdbfs-data")
	// zstor keeps the directory near its cap by removing stored files
	// (it may have started while the files were written).
	var ids map[int]bool
	waitUntil(t, 90*time.Second, "stored data files are evicted", func() bool {
		var total int64
		total, ids = dataFiles(dataDir)
		return total < 3*capMiB<<20
	})
	active := -1
	for id := range ids {
		active = max(active, id)
	}
	// Data files are 1 MiB: 24 MiB written made at least 24 of them.
	if active < files*size>>20-1 {
		t.Fatalf("newest data file d%d after writing %d bytes in 1 MiB files", active, files*size)
	}
	evicted := active + 1 - len(ids)
	if evicted < files*size>>20-3*capMiB {
		t.Fatalf("only %d of %d data files evicted (left: %v)", evicted, active+1, ids)
	}
	// A new zdbfs and zdb: nothing of the data is cached any more.
	unmountVol(t, d, "ev", "c1")
	mp = mountVol(t, d, "ev", "c2")
	dropCaches(t)
	compareTrees(t, want, snapshotTree(t, mp))
	text, err := d.ZstorMetrics("ev", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := metricValue(text, "zstor_retrieved_bytes_total")
	t.Logf("%d of %d data files evicted; %.0f bytes retrieved", evicted, active+1, got)
	if got == 0 {
		t.Errorf("no bytes retrieved from the backends although %d of %d data files were evicted", evicted, active+1)
	}
	unmountVol(t, d, "ev", "c2")
}

// TestArchiveDisasterRestore writes a tree, unmounts (the final rotation and
// upload), stops the plugin, deletes all local state, and mounts a volume with
// the same backends, key and meta_prefix on a new state root: the tree is
// back, names, modes, links and contents.
func TestArchiveDisasterRestore(t *testing.T) {
	a := requireArchiveEnv(t)
	d, stop := a.driver(t, "old")
	// rotate=0: nothing rotates by time, so only Unmount's final
	// rotation and upload can save the last writes.
	if err := d.Create(&volume.CreateRequest{Name: "dis", Options: a.options("rotate", "0")}); err != nil {
		t.Fatal(err)
	}
	g, err := d.Get(&volume.GetRequest{Name: "dis"})
	if err != nil {
		t.Fatal(err)
	}
	id := g.Volume.Status["id"].(string)
	prefix, _ := g.Volume.Status["backends"].(map[string]any)["meta_prefix"].(string)
	if prefix != "qsfs-"+id {
		t.Fatalf("status meta_prefix %q, want qsfs-%s", prefix, id)
	}
	mp := mountVol(t, d, "dis", "c1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(mp, "a", "b", "c"), 0o755))
	must(os.Mkdir(filepath.Join(mp, "private"), 0o700))
	must(os.WriteFile(filepath.Join(mp, "empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(mp, "a", "one"), []byte("1"), 0o640))
	must(os.WriteFile(filepath.Join(mp, "a", "b", "script.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.Symlink("a/b/script.sh", filepath.Join(mp, "link")))
	writeRandom(t, filepath.Join(mp, "a", "b", "c", "big"), 2<<20+1)
	writeRandom(t, filepath.Join(mp, "private", "small"), 4097)
	must(os.Chmod(filepath.Join(mp, "private", "small"), 0o400))
	want := snapshotTree(t, mp)
	unmountVol(t, d, "dis", "c1")
	stop() // zstor drains its queue before it exits
	must(os.RemoveAll(filepath.Join(a.root, "old")))

	d2, _ := a.driver(t, "new")
	if err := d2.Create(&volume.CreateRequest{Name: "dis2", Options: a.options("rotate", "0", "meta_prefix", prefix)}); err != nil {
		t.Fatal(err)
	}
	mp2 := mountVol(t, d2, "dis2", "c2")
	dropCaches(t)
	compareTrees(t, want, snapshotTree(t, mp2))
	unmountVol(t, d2, "dis2", "c2")
}

// TestMetaPrefixAndRoot: Status shows the effective metadata prefix (the
// default one too), and the zstor config keys paths relative to the zdb
// directory, so the volume can be recovered elsewhere.
func TestMetaPrefixAndRoot(t *testing.T) {
	e := newEnv(t)
	d := e.driver(t)
	if err := d.Create(&volume.CreateRequest{Name: "p1", Options: archivedOpts()}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "p2", Options: with(archivedOpts(), "meta_prefix", "mine")}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(&volume.CreateRequest{Name: "local"}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"p1": "qsfs-" + d.vols["p1"].rec.ID, "p2": "mine", "local": ""} {
		g, err := d.Get(&volume.GetRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := g.Volume.Status["backends"].(map[string]any)["meta_prefix"].(string)
		if got != want {
			t.Errorf("%s: status meta_prefix %q, want %q", name, got, want)
		}
	}
	rec := d.vols["p1"].rec
	st := d.newStack(rec)
	if err := os.MkdirAll(st.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := st.writeZstorConfig(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(st.path("zstor.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("root = %q", st.path("zdb")), fmt.Sprintf("prefix = %q", "qsfs-"+rec.ID)} {
		if !strings.Contains(string(b), want) {
			t.Errorf("zstor.toml lacks %s", want)
		}
	}
}

// TestArchiveRotateBoundsLocalOnly: with rotate set, fsync'd writes reach
// the backends without an unmount; after the host is lost (every process of
// the stack killed, the state root deleted) the same config restores them.
func TestArchiveRotateBoundsLocalOnly(t *testing.T) {
	a := requireArchiveEnv(t)
	d, stop := a.driver(t, "old")
	if err := d.Create(&volume.CreateRequest{Name: "rot", Options: a.options("rotate", "1s")}); err != nil {
		t.Fatal(err)
	}
	mp := mountVol(t, d, "rot", "c1")
	if err := os.Mkdir(filepath.Join(mp, "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(mp, "dir", "f1"), 100<<10)
	writeRandom(t, filepath.Join(mp, "f2"), 3000)
	want := snapshotTree(t, mp)
	v := d.vols["rot"]
	_, _, _, st := v.snapshot()
	zdbDir := st.path("zdb")
	// Wait until every closed file of both namespaces is stored: rotation
	// closed the files holding the writes.
	stored := func(path string) bool {
		out, err := exec.Command(a.bin, "zstor", "-c", st.path("zstor.toml"), "check", "-f", path).Output()
		return err == nil && len(bytes.TrimSpace(out)) > 0
	}
	waitUntil(t, 60*time.Second, "the written data is rotated out and stored", func() bool {
		for _, ns := range []string{"zdbfs-meta", "zdbfs-data"} {
			_, ids := dataFiles(filepath.Join(zdbDir, "data", ns))
			active := -1
			for id := range ids {
				active = max(active, id)
			}
			if active < 1 {
				return false
			}
			for id := 0; id < active; id++ {
				if !stored(filepath.Join(zdbDir, "data", ns, fmt.Sprintf("d%d", id))) ||
					!stored(filepath.Join(zdbDir, "index", ns, fmt.Sprintf("i%d", id))) {
					return false
				}
			}
		}
		return true
	})
	// The host dies: no unmount, no close hooks, no drain.
	for _, p := range []*Process{st.zstor, st.zdb, st.zdbfs} {
		p.markStopping() // not restarted
		if pid := p.Status().Pid; pid > 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		p.Stop(syscall.SIGKILL, 10*time.Second)
	}
	st.detachStale()
	stop()
	if err := os.RemoveAll(filepath.Join(a.root, "old")); err != nil {
		t.Fatal(err)
	}

	d2, _ := a.driver(t, "new")
	if err := d2.Create(&volume.CreateRequest{Name: "rot", Options: a.options("meta_prefix", st.spec.MetaPrefix(st.id))}); err != nil {
		t.Fatal(err)
	}
	mp2 := mountVol(t, d2, "rot", "c2")
	dropCaches(t)
	compareTrees(t, want, snapshotTree(t, mp2))
	unmountVol(t, d2, "rot", "c2")
}

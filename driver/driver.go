// Package driver is the Docker-facing state machine of the qsfs volume
// plugin: it implements go-plugins-helpers' volume.Driver (Create, Get, List,
// Mount, Unmount, Remove, Path, Capabilities) plus Update and a status
// report, validates volume options (options.go, backends.go), persists each
// volume under a state root (state.go), and runs each mounted volume's stack
// of supervised processes (stack.go, process.go): its network (Isolation),
// zstor, zdb and zdbfs.
//
// It does not own the socket, settings or signals (package plugin), the
// namespaces and firewall (package netns), the tombstone store and reaper
// (package driver/reaper), nor the programs it runs (zdb, zdbfs, zstor), which
// it talks to only as programs, sockets and files.
package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// Config is what the plugin hands the driver.
type Config struct {
	StateRoot  string            // volumes, data, tombstones
	MountRoot  string            // the propagated mount: <MountRoot>/<name>
	SecretsDir string            // key_file, password_file, config_file
	Defaults   map[string]string // plugin-wide volume options
	Self       string            // the qsfs binary
	Programs   Programs          // zdb, zdbfs, zstor (argv prefixes)
	Isolation  Isolation         // per-volume namespaces or none
	Mountinfo  string            // /proc/self/mountinfo

	MountTimeout     time.Duration // a Mount gives up after this
	StopTimeout      time.Duration // zdbfs and zdb get this long to stop
	DrainTimeout     time.Duration // zstor gets this long to drain on teardown
	ZstorMetricsPort uint16        // zstor's prometheus_port inside a namespace
	ZdbDataSize      int           // zdb --datasize in bytes
	Reaper           ReaperConfig  // tombstoned volumes and idle stacks

	// ZstorWorks reports whether the zstor program can run; nil = yes.
	ZstorWorks func() bool
	Log        *logrus.Logger
}

func (c *Config) setDefaults() {
	if c.Mountinfo == "" {
		c.Mountinfo = "/proc/self/mountinfo"
	}
	if c.MountTimeout == 0 {
		c.MountTimeout = 20 * time.Second
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 20 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 5 * time.Minute
	}
	if c.ZstorMetricsPort == 0 {
		c.ZstorMetricsPort = 9100
	}
	if c.ZdbDataSize == 0 {
		c.ZdbDataSize = 64 << 20
	}
	if c.Isolation == nil {
		c.Isolation = NoIsolation{}
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
	self := []string{c.Self}
	if len(c.Programs.Zdb) == 0 {
		c.Programs.Zdb = append(self, "zdb")
	}
	if len(c.Programs.Zdbfs) == 0 {
		c.Programs.Zdbfs = append(self, "zdbfs")
	}
	if len(c.Programs.Zstor) == 0 {
		c.Programs.Zstor = append(self, "zstor")
	}
}

// Volume states shown in Status and metrics.
const (
	StateCreated  = "created"  // never mounted since the plugin started
	StateMounted  = "mounted"  // zdbfs serves the mount
	StateIdle     = "idle"     // unmounted; network and zstor still up (uploads)
	StateStopped  = "stopped"  // nothing runs
	StateFailed   = "failed"   // the last Mount or restore failed
	StateStarting = "starting" // a Mount is bringing the stack up
	StateStopping = "stopping" // an Unmount is stopping the stack
)

// vol is one live volume. op serialises the slow lifecycle steps of this
// volume only; mu guards the fields for readers (Get, List, Status), so they
// never wait for a slow step.
type vol struct {
	op sync.Mutex

	mu      sync.Mutex
	rec     *Record
	stack   *Stack // nil when nothing was started
	state   string
	lastErr string
	removed bool
}

func (v *vol) snapshot() (Record, string, string, *Stack) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := *v.rec
	r.Mounts = make(map[string]int, len(v.rec.Mounts))
	for k, c := range v.rec.Mounts {
		r.Mounts[k] = c
	}
	return r, v.state, v.lastErr, v.stack
}

func (v *vol) setState(state, lastErr string) {
	v.mu.Lock()
	v.state, v.lastErr = state, lastErr
	v.mu.Unlock()
}

// Driver implements volume.Driver for qsfs volumes.
type Driver struct {
	cfg    Config
	store  *Store
	parser *Parser
	iso    Isolation
	log    *logrus.Logger

	mu   sync.Mutex // guards vols only; never held across a slow step
	vols map[string]*vol

	graveyard Graveyard

	zstorOnce sync.Once
	zstorOK   bool
}

var _ volume.Driver = (*Driver)(nil)

// New loads the state under cfg.StateRoot and returns a driver. It starts
// nothing; call Restore to bring back the stacks of mounted volumes.
func New(cfg Config) (*Driver, error) {
	cfg.setDefaults()
	if cfg.StateRoot == "" || cfg.MountRoot == "" {
		return nil, fmt.Errorf("driver: state root and mount root are required")
	}
	d := &Driver{
		cfg:    cfg,
		store:  &Store{Root: cfg.StateRoot},
		parser: &Parser{Defaults: cfg.Defaults, SecretsDir: cfg.SecretsDir},
		iso:    cfg.Isolation,
		log:    cfg.Log,
		vols:   map[string]*vol{},
	}
	if err := d.store.Init(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.MountRoot, 0o755); err != nil {
		return nil, fmt.Errorf("create mount root %s: %w", cfg.MountRoot, err)
	}
	recs, errs := d.store.List()
	for _, err := range errs {
		d.log.WithError(err).Error("skipping unreadable volume state")
	}
	for _, r := range recs {
		state := StateCreated
		if r.MountCount() > 0 {
			state = StateStopped
		}
		d.vols[r.Name] = &vol{rec: r, state: state}
	}
	d.graveyard = newGraveyard(d)
	return d, nil
}

// Store returns the driver's state store.
func (d *Driver) Store() *Store { return d.store }

// Mountpoint returns where volume name is mounted.
func (d *Driver) Mountpoint(name string) string { return filepath.Join(d.cfg.MountRoot, name) }

func (d *Driver) zstorWorks() bool {
	d.zstorOnce.Do(func() {
		d.zstorOK = d.cfg.ZstorWorks == nil || d.cfg.ZstorWorks()
	})
	return d.zstorOK
}

func (d *Driver) lookup(name string) (*vol, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	d.mu.Lock()
	v := d.vols[name]
	d.mu.Unlock()
	if v == nil {
		return nil, fmt.Errorf("volume %s: %w", name, ErrNotFound)
	}
	return v, nil
}

// ErrNotFound is returned for a volume name the plugin does not have.
var ErrNotFound = errors.New("no such volume")

// ErrInUse is returned by Remove for a mounted volume.
var ErrInUse = errors.New("volume is in use")

// Create validates and persists a volume; it starts nothing. Creating an
// existing name is a no-op.
func (d *Driver) Create(req *volume.CreateRequest) error {
	if err := ValidateName(req.Name); err != nil {
		return err
	}
	d.mu.Lock()
	_, exists := d.vols[req.Name]
	d.mu.Unlock()
	if exists {
		return nil
	}
	spec, err := d.parser.Parse(req.Options)
	if err != nil {
		return fmt.Errorf("volume %s: %w", req.Name, err)
	}
	id, err := NewID()
	if err != nil {
		return err
	}
	rec := &Record{Name: req.Name, ID: id, CreatedAt: time.Now().UTC().Truncate(time.Second), Spec: *spec}
	v := &vol{rec: rec, state: StateCreated}
	v.op.Lock()
	defer v.op.Unlock()
	d.mu.Lock()
	if _, exists := d.vols[req.Name]; exists {
		d.mu.Unlock()
		return nil
	}
	d.vols[req.Name] = v
	d.mu.Unlock()
	if err := d.store.Save(rec); err != nil {
		d.mu.Lock()
		delete(d.vols, req.Name)
		d.mu.Unlock()
		return err
	}
	d.log.WithFields(logrus.Fields{"volume": req.Name, "id": id, "archived": spec.Archived()}).Info("volume created")
	return nil
}

// List returns every volume from state.
func (d *Driver) List() (*volume.ListResponse, error) {
	d.mu.Lock()
	vs := make([]*vol, 0, len(d.vols))
	for _, v := range d.vols {
		vs = append(vs, v)
	}
	d.mu.Unlock()
	out := &volume.ListResponse{Volumes: []*volume.Volume{}}
	for _, v := range vs {
		r, state, _, _ := v.snapshot()
		out.Volumes = append(out.Volumes, &volume.Volume{Name: r.Name, Mountpoint: d.publicMountpoint(r.Name, state)})
	}
	sort.Slice(out.Volumes, func(i, j int) bool { return out.Volumes[i].Name < out.Volumes[j].Name })
	return out, nil
}

func (d *Driver) publicMountpoint(name, state string) string {
	if state == StateMounted {
		return d.Mountpoint(name)
	}
	return ""
}

// Get returns a volume with its status, from state.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	v, err := d.lookup(req.Name)
	if err != nil {
		return nil, err
	}
	r, state, _, _ := v.snapshot()
	return &volume.GetResponse{Volume: &volume.Volume{
		Name:       r.Name,
		Mountpoint: d.publicMountpoint(r.Name, state),
		CreatedAt:  r.CreatedAt.Format(time.RFC3339),
		Status:     d.status(v),
	}}, nil
}

// Path returns the mountpoint of a mounted volume.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	v, err := d.lookup(req.Name)
	if err != nil {
		return nil, err
	}
	r, state, _, _ := v.snapshot()
	return &volume.PathResponse{Mountpoint: d.publicMountpoint(r.Name, state)}, nil
}

// Capabilities reports local scope: each host has its own stack.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: "local"}}
}

// Mount counts the mount ID (a multiset) and, on the first reference,
// brings up the volume's stack and waits for the FUSE mount.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	v, err := d.lookup(req.Name)
	if err != nil {
		return nil, err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if v.removed {
		return nil, fmt.Errorf("volume %s: %w", req.Name, ErrNotFound)
	}
	if err := d.ensureMounted(v); err != nil {
		return nil, err
	}
	v.mu.Lock()
	next := *v.rec
	next.Mounts = copyMounts(v.rec.Mounts)
	next.Mounts[req.ID]++
	v.mu.Unlock()
	if err := d.store.Save(&next); err != nil {
		if next.MountCount() == 1 {
			d.stopStack(v, false)
		}
		return nil, err
	}
	v.mu.Lock()
	v.rec = &next
	v.mu.Unlock()
	d.log.WithFields(logrus.Fields{"volume": req.Name, "mounts": next.MountCount()}).Info("mounted")
	return &volume.MountResponse{Mountpoint: d.Mountpoint(req.Name)}, nil
}

func copyMounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m)+1)
	for k, c := range m {
		out[k] = c
	}
	return out
}

// ensureMounted brings the stack up unless the filesystem is served. On
// failure everything started is stopped again. Called under v.op.
func (d *Driver) ensureMounted(v *vol) error {
	v.mu.Lock()
	st := v.stack
	rec := v.rec
	v.mu.Unlock()
	if st != nil && st.FSUp() {
		if t, _ := MountedFS(d.cfg.Mountinfo, st.mountpoint); t == "fuse.zdbfs" {
			return nil
		}
		d.log.WithField("volume", rec.Name).Warn("mount is gone; restarting the filesystem")
		_ = st.stopFS()
	}
	if st != nil && !st.FSUp() && st.spec.Archived() != st.ZstorRunning() && st.zstorNote == "" {
		// Backends were added or removed since the base started: start over.
		d.log.WithField("volume", rec.Name).Info("backends changed; restarting the volume's network and zstor")
		if err := st.stopBase(d.cfg.DrainTimeout, true); err != nil {
			d.log.WithError(err).WithField("volume", rec.Name).Warn("stop base")
		}
		st = nil
	}
	if st == nil {
		st = d.newStack(rec)
	}
	v.mu.Lock()
	v.stack, v.state = st, StateStarting
	v.mu.Unlock()
	baseWasUp := st.BaseUp()
	deadline := time.Now().Add(d.cfg.MountTimeout)
	err := st.startBase(deadline)
	if err == nil {
		err = st.startFS(deadline)
	}
	if err != nil {
		// Stop what this Mount started: everything, or only the
		// filesystem when the base was up (idle, maybe uploading) before.
		var cerr error
		keep := st
		if baseWasUp {
			cerr = st.stopFS()
		} else {
			cerr, keep = st.stopAll(), nil
		}
		if cerr != nil {
			d.log.WithError(cerr).WithField("volume", rec.Name).Error("cleanup after failed mount")
		}
		v.mu.Lock()
		v.stack, v.state, v.lastErr = keep, StateFailed, err.Error()
		v.mu.Unlock()
		d.log.WithError(err).WithField("volume", rec.Name).Error("mount failed")
		return fmt.Errorf("mount volume %s: %w", rec.Name, err)
	}
	v.setState(StateMounted, "")
	return nil
}

// Unmount removes one count of the mount ID (always, even when stopping
// fails) and stops the filesystem on the last reference.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	v, err := d.lookup(req.Name)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	next := *v.rec
	next.Mounts = copyMounts(v.rec.Mounts)
	v.mu.Unlock()
	if next.Mounts[req.ID] == 0 {
		d.log.WithFields(logrus.Fields{"volume": req.Name, "mount_id": req.ID}).Warn("unmount of an unknown mount id ignored")
		return nil
	}
	next.Mounts[req.ID]--
	if next.Mounts[req.ID] == 0 {
		delete(next.Mounts, req.ID)
	}
	saveErr := d.store.Save(&next)
	v.mu.Lock()
	v.rec = &next
	v.mu.Unlock()
	d.log.WithFields(logrus.Fields{"volume": req.Name, "mounts": next.MountCount()}).Info("unmounted")
	if next.MountCount() > 0 {
		return saveErr
	}
	return errors.Join(saveErr, d.stopStack(v, false))
}

// ForgetMounts drops every mount ID of volume name and stops its filesystem,
// as the last Unmount would: for IDs orphaned by an engine that crashed
// before it could send Unmount. It returns how many were dropped.
func (d *Driver) ForgetMounts(name string) (int, error) {
	v, err := d.lookup(name)
	if err != nil {
		return 0, err
	}
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	next := *v.rec
	n := next.MountCount()
	next.Mounts = nil
	v.mu.Unlock()
	if err := d.store.Save(&next); err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.rec = &next
	v.mu.Unlock()
	d.log.WithFields(logrus.Fields{"volume": name, "dropped": n}).Warn("mount ids forgotten")
	return n, d.stopStack(v, false)
}

// stopStack stops the filesystem. The base (namespace, and zstor if any)
// stays up, state idle, so uploads continue and the next Mount is quick;
// the idle watch stops it once uploads are quiet. Without isolation and
// without zstor nothing is left to keep. all stops everything. Called under
// v.op.
func (d *Driver) stopStack(v *vol, all bool) error {
	v.mu.Lock()
	st := v.stack
	v.mu.Unlock()
	if st == nil {
		v.setState(StateStopped, "")
		return nil
	}
	v.setState(StateStopping, "")
	err := st.stopFS()
	if all || (!st.ZstorRunning() && !d.iso.Enabled()) {
		err = errors.Join(err, st.stopBase(d.cfg.DrainTimeout, true))
		v.mu.Lock()
		v.stack = nil
		v.mu.Unlock()
		v.setState(StateStopped, errString(err))
		return err
	}
	v.setState(StateIdle, errString(err))
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Remove refuses a mounted volume; otherwise the name is gone at once and
// the volume's stack and data are handed to the graveyard (tombstone, then
// teardown once uploads are quiet).
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	v, err := d.lookup(req.Name)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	r, _, _, st := v.snapshot()
	if n := r.MountCount(); n > 0 {
		return fmt.Errorf("volume %s: %w (%d mounts): stop the containers that use it first", req.Name, ErrInUse, n)
	}
	if err := d.graveyard.Bury(&r, st); err != nil {
		return err
	}
	if err := d.store.Delete(req.Name); err != nil {
		return err
	}
	v.mu.Lock()
	v.removed, v.stack = true, nil
	v.mu.Unlock()
	d.mu.Lock()
	if d.vols[req.Name] == v {
		delete(d.vols, req.Name)
	}
	d.mu.Unlock()
	d.log.WithFields(logrus.Fields{"volume": req.Name, "id": r.ID}).Info("volume removed")
	return nil
}

// Restore brings back, in the background, the stacks of volumes that had
// mounts when the plugin stopped. It returns at once.
func (d *Driver) Restore() {
	d.mu.Lock()
	var vs []*vol
	for _, v := range d.vols {
		vs = append(vs, v)
	}
	d.mu.Unlock()
	for _, v := range vs {
		r, _, _, _ := v.snapshot()
		if r.MountCount() == 0 {
			continue
		}
		go func(v *vol, name string) {
			v.op.Lock()
			defer v.op.Unlock()
			if v.removed {
				return
			}
			if err := d.ensureMounted(v); err != nil {
				d.log.WithError(err).WithField("volume", name).Error("restore failed")
				return
			}
			d.log.WithField("volume", name).Info("restored")
		}(v, r.Name)
	}
	d.graveyard.Restore()
}

// Shutdown stops every stack (in parallel, in each the right order) within
// timeout; mount IDs stay persisted so Restore can bring them back. The
// networks of mounted volumes are kept for the next start.
func (d *Driver) Shutdown(timeout time.Duration) {
	d.mu.Lock()
	var vs []*vol
	for _, v := range d.vols {
		vs = append(vs, v)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Add(1)
		go func(v *vol) {
			defer wg.Done()
			v.op.Lock()
			defer v.op.Unlock()
			r, _, _, st := v.snapshot()
			if st == nil {
				return
			}
			err := st.stopFS()
			if st.zstor != nil {
				st.zstor.Stop(syscall.SIGTERM, timeout)
				st.lock(func() { st.zstor = nil })
			}
			if r.MountCount() == 0 {
				err = errors.Join(err, d.iso.Teardown(r.ID))
			}
			if err != nil {
				d.log.WithError(err).WithField("volume", r.Name).Error("shutdown")
			}
			v.mu.Lock()
			v.stack, v.state = nil, StateStopped
			v.mu.Unlock()
		}(v)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout + 5*time.Second):
		d.log.Warn("shutdown timed out")
	}
	d.graveyard.Shutdown(timeout)
}

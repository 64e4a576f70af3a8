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
	// ZdbfsURing is zdbfs's uring= option; "" or "auto" passes nothing
	// (zdbfs's default, and an official 0-db-fs knows no such option)
	ZdbfsURing string
	Reaper     ReaperConfig // tombstoned volumes and idle stacks

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

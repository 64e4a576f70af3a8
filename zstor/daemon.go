package zstor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/proto"
)

// Daemon tuning. Intervals may be shortened with environment variables
// (tests): QSFS_ZSTOR_HEALTH_INTERVAL, QSFS_ZSTOR_REPAIR_INTERVAL,
// QSFS_ZSTOR_EVICT_INTERVAL (Go durations).
const (
	defaultPidFile  = "/var/run/zstor.pid"
	storeWorkers    = 2 // background uploads at once: bounds memory to ~2 objects
	blockingWorkers = 2 // blocking commands run beside them, never behind them
	maxBackoff      = 5 * time.Minute
)

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return def
}

type daemon struct {
	cfgPath   string
	eng       *engine.Engine
	log       *logrus.Entry
	queue     *queue
	health    *health
	blockSem  chan struct{}
	repairMu  sync.Mutex
	wg        sync.WaitGroup
	stop      chan struct{}
	repairNow chan struct{}
	verified  evictCache
	active    atomic.Int64 // blocking commands in progress
}

// StatusFile is where the daemon publishes its queue for `zstor status`.
func statusFile(socket string) string { return socket + ".status.json" }

func runDaemon(cfgPath string, cfg *config.Config, log *logrus.Entry) error {
	if cfg.Socket == "" {
		return errors.New("monitor needs `socket` set in the config")
	}
	pidFile := cfg.PidFile
	if pidFile == "" {
		pidFile = defaultPidFile
	}
	if err := claimPidFile(pidFile); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	eng, err := engine.New(cfg, log)
	if err != nil {
		return err
	}
	d := &daemon{cfgPath: cfgPath, eng: eng, log: log, queue: newQueue(), blockSem: make(chan struct{}, blockingWorkers),
		stop: make(chan struct{}), repairNow: make(chan struct{}, 1)}
	d.health = newHealth(eng, log)
	eng.Health = d.health

	os.Remove(cfg.Socket) // stale socket after a crash
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	defer os.Remove(cfg.Socket)
	defer os.Remove(statusFile(cfg.Socket))
	// Commands on the socket read and write any file as this user: owner only.
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("socket %s: %w", cfg.Socket, err)
	}

	if cfg.PrometheusPort != 0 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(metricStore, metricRetrieve, metricRebuild, metricCheck, metricStoredBytes, metricRetrievedBytes, newCollector(d))
		if cfg.ZdbfsMountpoint != "" {
			zs := newZdbfsStats()
			reg.MustRegister(zs)
			go zs.poll(cfg.ZdbfsMountpoint, d.stop)
		}
		srv := &http.Server{Addr: fmt.Sprintf("[::]:%d", cfg.PrometheusPort), Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
		mln, err := net.Listen("tcp", srv.Addr)
		if err != nil { // no IPv6 in this namespace
			mln, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", cfg.PrometheusPort))
		}
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener on port %d: %w", cfg.PrometheusPort, err)
		}
		go srv.Serve(mln)
		defer srv.Close()
	}

	d.health.probe() // first view before accepting work
	d.requeueFailures()
	for i := 0; i < storeWorkers; i++ {
		d.wg.Add(1)
		go d.worker()
	}
	go d.loop(cfg.Socket)
	go d.accept(ln)
	log.WithFields(logrus.Fields{"socket": cfg.Socket, "pid": os.Getpid()}).Info("zstor daemon ready")

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	for sig := range sigs {
		if sig == syscall.SIGUSR1 {
			d.reload()
			continue
		}
		break
	}
	ln.Close()
	log.Info("stopping: waiting for queued uploads (signal again to exit now)")
	drained := make(chan struct{})
	go func() {
		for !d.queue.idle() || d.active.Load() > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		close(drained)
	}()
	select {
	case <-drained:
		log.Info("queue drained")
	case sig := <-sigs:
		st := d.queue.stats()
		for _, j := range st.Jobs {
			log.WithFields(logrus.Fields{"file": j.File, "attempts": j.Attempts, "last_error": j.LastError}).Error("exiting with upload not done")
		}
		log.WithField("signal", sig.String()).Warn("forced exit")
	}
	close(d.stop)
	d.queue.close()
	d.eng.Pool.Close()
	return nil
}

// claimPidFile refuses to start when the pid file names a live process with
// our command name, then writes our pid.
func claimPidFile(path string) error {
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() {
			// Same program (comm) and a monitor (cmdline): every qsfs
			// component has the same comm, and pids get reused.
			their, err1 := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			ours, err2 := os.ReadFile("/proc/self/comm")
			cmdline, err3 := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err1 == nil && err2 == nil && err3 == nil && string(their) == string(ours) &&
				strings.Contains(string(cmdline), "\x00monitor") {
				return fmt.Errorf("zstor daemon already running with pid %d (pid file %s)", pid, path)
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("pid file dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file %s: %w", path, err)
	}
	return nil
}

func (d *daemon) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go d.serve(c)
	}
}

// serve answers commands on one client connection until it closes.
func (d *daemon) serve(c net.Conn) {
	defer c.Close()
	for {
		b, err := proto.ReadFrame(c)
		if err != nil {
			return
		}
		cmd, err := proto.UnmarshalCommand(b)
		var resp *proto.Response
		if err != nil {
			resp = &proto.Response{Kind: proto.Err, Err: err.Error()}
		} else {
			resp = d.submit(cmd)
		}
		if err := proto.WriteFrame(c, resp.Marshal()); err != nil {
			return
		}
	}
}

// submit runs a blocking command now (bounded by blockingWorkers) or queues
// a background store and answers at once.
func (d *daemon) submit(cmd *proto.Command) *proto.Response {
	if cmd.Kind == proto.Store && !cmd.Blocking {
		if _, err := os.Stat(cmd.File); err != nil {
			return &proto.Response{Kind: proto.Err, Err: fmt.Sprintf("store %s: %v", cmd.File, err)}
		}
		d.queue.push(&job{cmd: cmd, prio: 1})
		return &proto.Response{Kind: proto.Success}
	}
	d.active.Add(1)
	defer d.active.Add(-1)
	d.blockSem <- struct{}{}
	defer func() { <-d.blockSem }()
	return execute(d.eng, cmd, d.log)
}

func (d *daemon) worker() {
	defer d.wg.Done()
	for {
		j := d.queue.pop()
		if j == nil {
			return
		}
		resp := execute(d.eng, j.cmd, d.log)
		if resp.Kind != proto.Err {
			if j.attempts > 0 && j.cmd.SaveFailure {
				if err := d.eng.DeleteFailure(j.cmd.File); err != nil {
					d.log.WithError(err).WithField("file", j.cmd.File).Warn("could not clear failure record")
				}
			}
			d.queue.finish(j, 0)
			continue
		}
		j.attempts++
		j.lastErr = resp.Err
		if _, err := os.Stat(j.cmd.File); errors.Is(err, os.ErrNotExist) {
			d.log.WithFields(logrus.Fields{"file": j.cmd.File, "error": resp.Err}).Error("upload dropped: file no longer exists")
			if j.cmd.SaveFailure {
				d.eng.DeleteFailure(j.cmd.File)
			}
			d.queue.finish(j, 0)
			continue
		}
		if j.attempts == 1 && j.cmd.SaveFailure {
			// Survives a daemon restart; best effort (the metadata store may
			// be what is failing).
			f := engine.Failure{Path: j.cmd.File, Delete: j.cmd.Delete}
			if j.cmd.KeyPath != nil {
				f.KeyDir = *j.cmd.KeyPath
			}
			if err := d.eng.SaveFailure(f); err != nil {
				d.log.WithError(err).WithField("file", j.cmd.File).Warn("could not record failed upload in the metadata store")
			}
		}
		backoff := min(time.Duration(1<<min(j.attempts, 10))*time.Second, maxBackoff)
		d.log.WithFields(logrus.Fields{"file": j.cmd.File, "attempt": j.attempts, "retry_in": backoff.String(), "error": resp.Err}).Warn("upload failed, will retry")
		d.queue.finish(j, backoff)
	}
}

// loop runs the periodic work: health probes, status file, repair sweep
// and data-dir eviction.
func (d *daemon) loop(socket string) {
	healthT := time.NewTicker(envDuration("QSFS_ZSTOR_HEALTH_INTERVAL", 3*time.Second))
	repairT := time.NewTicker(envDuration("QSFS_ZSTOR_REPAIR_INTERVAL", 10*time.Minute))
	evictT := time.NewTicker(envDuration("QSFS_ZSTOR_EVICT_INTERVAL", 60*time.Second))
	defer healthT.Stop()
	defer repairT.Stop()
	defer evictT.Stop()
	d.writeStatus(socket)
	for {
		select {
		case <-d.stop:
			return
		case <-healthT.C:
			if d.health.probe() {
				d.queue.retryAll() // a backend came back
			}
			d.writeStatus(socket)
		case <-repairT.C:
			go d.sweep()
		case <-d.repairNow:
			go d.sweep()
		case <-evictT.C:
			go d.evict()
		}
	}
}

func (d *daemon) writeStatus(socket string) {
	b, err := json.MarshalIndent(d.queue.stats(), "", "  ")
	if err != nil {
		return
	}
	tmp := statusFile(socket) + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		os.Rename(tmp, statusFile(socket))
	}
}

// reload re-reads the config (SIGUSR1). Backends that left the config are
// marked replaced and a repair sweep moves their shards.
func (d *daemon) reload() {
	cfg, err := loadConfig(d.cfgPath)
	if err != nil {
		d.log.WithError(err).Error("reload failed, keeping the current config")
		return
	}
	old := d.eng.Config()
	oldMeta := d.eng.Meta()
	if err := d.eng.Reload(cfg); err != nil {
		d.log.WithError(err).Error("reload failed, keeping the current config")
		return
	}
	removed := removedBackends(old, cfg)
	for _, b := range removed {
		if err := d.eng.MarkReplaced(b); err != nil {
			d.log.WithError(err).WithField("backend", b.Address).Warn("could not record replaced backend")
		}
	}
	d.log.WithField("removed_backends", len(removed)).Info("config reloaded")
	metaChanged := !sameBackends(old.Meta.Config.Backends, cfg.Meta.Config.Backends)
	d.health.probe()
	d.queue.retryAll()
	go func() {
		if metaChanged {
			d.rebuildMeta(oldMeta, d.eng.Meta())
		}
		select {
		case d.repairNow <- struct{}{}:
		default:
		}
	}()
}

// requeueFailures queues the failed uploads recorded by an earlier run.
func (d *daemon) requeueFailures() {
	fs, err := d.eng.Failures()
	if err != nil {
		d.log.WithError(err).Warn("cannot list recorded upload failures")
	}
	for _, f := range fs {
		if _, err := os.Stat(f.Path); err != nil {
			d.log.WithFields(logrus.Fields{"file": f.Path, "error": err}).Error("recorded failed upload is gone, dropping its record")
			d.eng.DeleteFailure(f.Path)
			continue
		}
		c := &proto.Command{Kind: proto.Store, File: f.Path, SaveFailure: true, Delete: f.Delete}
		if f.KeyDir != "" {
			kd := f.KeyDir
			c.KeyPath = &kd
		}
		d.queue.push(&job{cmd: c, prio: 1, attempts: 1, lastErr: "recorded by an earlier run"})
		d.log.WithField("file", f.Path).Info("retrying upload recorded as failed by an earlier run")
	}
}

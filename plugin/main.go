// Package plugin is the process entry of the qsfs volume plugin: settings
// (environment and flags), logging, the VolumeDriver socket with qsfs's
// extra endpoints, the metrics endpoint, signals, and the `qsfs volume`
// client that talks to a running plugin over its socket.
//
// It does not own volume state or stacks (package driver).
package plugin

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/driver"
)

// Main runs `qsfs plugin` with args and returns the exit status.
func Main(args []string) int {
	fs := flag.NewFlagSet("qsfs plugin", flag.ContinueOnError)
	socket := fs.String("socket", "", "VolumeDriver socket (default $QSFS_SOCKET or /run/docker/plugins/qsfs.sock)")
	state := fs.String("state", "", "state root (default $QSFS_STATE_ROOT or /var/lib/qsfs)")
	mounts := fs.String("mounts", "", "mount root (default $QSFS_MOUNT_ROOT or /mnt/volumes)")
	debug := fs.Bool("debug", false, "log at debug level")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: qsfs [plugin] [flags]\n\nServes the qsfs VolumeDriver. Settings come from the environment:")
		for _, s := range Env {
			fmt.Fprintf(fs.Output(), "  %-26s %-22q %s\n", s.Name, s.Default, s.Help)
		}
		fmt.Fprintln(fs.Output(), "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	set, err := LoadSettings(os.Getenv, os.Environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsfs plugin: %v\n", err)
		return 2
	}
	if *socket != "" {
		set.Socket = *socket
	}
	if *state != "" {
		set.StateRoot = *state
	}
	if *mounts != "" {
		set.MountRoot = *mounts
	}
	if *debug {
		set.LogLevel = logrus.DebugLevel
	}
	log := logrus.New()
	log.SetOutput(os.Stdout)
	log.SetLevel(set.LogLevel)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	logrus.SetOutput(os.Stdout)
	logrus.SetLevel(set.LogLevel)
	if err := Run(context.Background(), set, log); err != nil {
		log.WithError(err).Error("plugin failed")
		return 1
	}
	return 0
}

// Run serves the plugin with set until SIGTERM or SIGINT (or ctx ends).
// The socket is up before volumes are restored, and removed on exit.
func Run(ctx context.Context, set *Settings, log *logrus.Logger) error {
	self, err := selfPath()
	if err != nil {
		return err
	}
	progs := set.programs(self)
	var iso driver.Isolation = driver.NoIsolation{}
	if set.Isolation {
		if changed, err := writableProcSys(); err != nil {
			log.WithError(err).Warn("host sysctls are read-only: namespaces may not reach their backends")
		} else if changed {
			log.Info("remounted /proc/sys read-write (managed plugin) for the forwarding sysctls")
		}
		iso = &driver.NetnsIsolation{Self: self, Subnet4: set.Subnet4, Subnet6: set.Subnet6}
	}
	d, err := driver.New(driver.Config{
		StateRoot: set.StateRoot, MountRoot: set.MountRoot, SecretsDir: set.SecretsDir,
		Defaults: set.Defaults, Self: self, Programs: progs, Isolation: iso,
		MountTimeout: set.MountTimeout, StopTimeout: set.StopTimeout, DrainTimeout: set.DrainTimeout,
		ZstorMetricsPort: set.ZstorMetricsPort, ZdbDataSize: set.ZdbDataSize, Reaper: set.Reaper,
		ZdbfsURing: set.ZdbfsURing,
		ZstorWorks: func() bool { return programWorks(progs.Zstor) },
		Log:        log,
	})
	if err != nil {
		return err
	}
	if len(set.Defaults) > 0 {
		if _, err := (&driver.Parser{Defaults: set.Defaults, SecretsDir: set.SecretsDir}).Parse(nil); err != nil {
			log.WithError(err).Warn("the plugin-wide volume defaults (QSFS_OPT_*) do not make a valid volume on their own; volumes must add options")
		}
	}
	reapCtx, stopReaping := context.WithCancel(context.Background())
	defer stopReaping()
	go reapOrphans(reapCtx, d.OwnsPID, log)
	l, err := Listen(set.Socket)
	if err != nil {
		return err
	}
	h := NewHandler(d)
	go func() {
		if err := h.Serve(l); err != nil {
			log.WithError(err).Debug("socket closed")
		}
	}()
	log.WithFields(logrus.Fields{
		"socket": set.Socket, "state": set.StateRoot, "mounts": set.MountRoot,
		"isolation": set.Isolation, "metrics": set.MetricsAddr, "defaults": set.DefaultKeys(),
	}).Info("qsfs plugin serving")
	d.Restore()
	if set.MetricsAddr != "" {
		srv := serveMetrics(set.MetricsAddr, d, log)
		defer srv.Close()
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		log.WithField("signal", sig.String()).Info("stopping")
	case <-ctx.Done():
	}
	l.Close()
	_ = os.Remove(set.Socket)
	d.Shutdown(set.ShutdownTimeout)
	log.Info("stopped")
	return nil
}

// programWorks reports whether argv can run: `--version` (or `--help`)
// exits 0 within a few seconds.
func programWorks(argv []string) bool {
	for _, flag := range []string{"--version", "--help"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cmd := exec.CommandContext(ctx, argv[0], append(append([]string{}, argv[1:]...), flag)...)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		err := cmd.Run()
		cancel()
		if err == nil {
			return true
		}
	}
	return false
}

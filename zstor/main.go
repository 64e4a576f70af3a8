// Package zstor is qsfs's 0-stor v2 compatible archiver (`qsfs zstor`) and
// the zdb hook that drives it (`qsfs hook`).
//
// This package owns the command line (cli.go), the daemon started by
// `monitor` (daemon.go: socket, queue, retries; monitor.go: backend health;
// maintenance.go: repair sweep and data-dir eviction; metrics.go) and the
// hook (hook.go). The pipeline lives in zstor/engine, formats in
// zstor/codec, zstor/meta, zstor/config and zstor/proto, connections and
// placement in zstor/backend.
package zstor

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/sirupsen/logrus"
)

// Main runs `qsfs zstor` with args and returns the exit status.
func Main(args []string) int {
	if os.Getenv("GOGC") == "" {
		// Objects are large and short-lived: collect earlier so the heap
		// stays near the live object instead of twice it.
		debug.SetGCPercent(40)
	}
	opts, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "zstor: %v\n\n%s", err, usage)
		return 2
	}
	if opts.help {
		fmt.Print(usage)
		return 0
	}
	log, closeLog, err := setupLog(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "zstor: %v\n", err)
		return 1
	}
	defer closeLog()
	if err := run(opts, log); err != nil {
		log.WithError(err).Debug("command failed")
		fmt.Fprintf(os.Stderr, "zstor: %v\n", err)
		return 1
	}
	return 0
}

// setupLog sends logs of `monitor` to stdout, of other commands to stderr
// (warnings only unless -d), and additionally to --log_file when given.
func setupLog(o *options) (*logrus.Entry, func(), error) {
	l := logrus.New()
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	var out io.Writer = os.Stderr
	if o.cmd == "monitor" {
		out = os.Stdout
	}
	switch {
	case o.debug:
		l.SetLevel(logrus.DebugLevel)
	case o.cmd == "monitor":
		l.SetLevel(logrus.InfoLevel)
	default:
		l.SetLevel(logrus.WarnLevel)
	}
	closeFn := func() {}
	if o.logFileSet {
		f, err := openRolling(o.logFile)
		if err != nil {
			return nil, nil, err
		}
		out = io.MultiWriter(out, f)
		closeFn = func() { f.Close() }
	}
	l.SetOutput(out)
	return logrus.NewEntry(l).WithField("component", "zstor"), closeFn, nil
}

package zdb

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// Main runs `qsfs zdb` with args and returns the exit status.
func Main(args []string) int {
	opts, err := ParseOptions(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "zdb: %v\n\n%s", err, helpText)
		return 1
	}
	if opts.Help {
		fmt.Fprint(os.Stdout, helpText)
		return 1
	}
	if opts.Version {
		fmt.Printf("0-db engine, %s (commit qsfs)\n", Version)
		return 0
	}
	if opts.Background && os.Getenv(backgroundEnv) == "" {
		return daemonize(args)
	}
	takeReadyPipe()
	log := newLogger(opts)
	code, err := run(opts, log)
	if err != nil {
		log.Error(err)
		return 1
	}
	return code
}

func newLogger(opts Options) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stdout)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	if opts.Verbose {
		l.SetLevel(logrus.DebugLevel)
	}
	if opts.LogFile != "" {
		f, err := os.OpenFile(opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "zdb: open log file %s: %v\n", opts.LogFile, err)
		} else {
			l.SetOutput(io.MultiWriter(f))
		}
	}
	return l.WithField("component", "zdb")
}

// run starts the server and blocks until a signal stops it.
func run(opts Options, log *logrus.Entry) (int, error) {
	id := instanceID(opts)
	hooks := &hookRunner{path: opts.Hook, id: id, log: log}
	store, err := openStore(opts, log, hooks)
	if err != nil {
		return 1, err
	}
	if opts.Dump {
		defer store.Close()
		return 0, dumpIndexes(store, os.Stdout)
	}
	var tag [4]byte
	rand.Read(tag[:])
	srv := &Server{
		opts:        opts,
		store:       store,
		hooks:       hooks,
		log:         log,
		id:          id,
		instanceTag: hex.EncodeToString(tag[:]),
		bootTime:    time.Now(),
		clients:     make(map[*session]struct{}),
	}
	if err := srv.listen(); err != nil {
		store.Close()
		return 1, fmt.Errorf("listen: %w", err)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	// a closed stdout (the supervisor went away) must not kill the server
	// on its next log line; a handled signal (unlike an ignored one) is
	// reset to default in hook processes
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if code := hooks.run("ready", true); code != 0 {
		log.Errorf("unsuccessful init hook, stopping (code: %d)", code)
		srv.closeListeners()
		srv.emergency()
		return 0, nil
	}
	log.WithField("id", id).Infof("zdb %s ready, %d namespace(s)", Version, len(store.Names()))
	notifyReady()
	go srv.serve()
	stop := make(chan struct{})
	go srv.housekeeping(stop)
	sig := <-sigs
	close(stop)
	log.Infof("signal %v received, stopping", sig)
	srv.closing.Store(true)
	srv.closeListeners()
	hooks.run("close", true)
	srv.emergency()
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s), nil
	}
	return 1, nil
}

// emergency flushes every namespace and fires namespace-closing for each
// (not waited for), as official's namespaces_emergency does.
func (s *Server) emergency() { s.closeNamespaces(false) }

// closeNamespaces syncs each namespace and fires namespace-closing. After
// a crash a namespace lock may never be released, so locks are only tried.
func (s *Server) closeNamespaces(crashed bool) {
	for _, ns := range s.store.All() {
		locked := true
		if crashed {
			locked = ns.mu.TryLock()
		} else {
			ns.mu.Lock()
		}
		if locked && ns.datW != nil {
			ns.datW.Sync()
			ns.idxW.Sync()
		}
		idx, dat, dirty := ns.indexPath(ns.curID), ns.dataPath(ns.curID), ns.dirtyList()
		if locked {
			ns.mu.Unlock()
		}
		s.hooks.run("namespace-closing", false, ns.name, idx, dat, dirty)
	}
	if !crashed {
		s.store.Close()
	}
}

// trimEvery is how often (in housekeeping ticks, seconds) the argument
// chunks that stayed unused are dropped.
const trimEvery = 10

// housekeeping runs --rotate and --synctime in the background, and trims
// the argument chunk pool.
func (s *Server) housekeeping(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if tick%trimEvery == 0 {
			s.args.trim()
		}
		for _, ns := range s.store.All() {
			ns.mu.Lock()
			if ns.removed.Load() || ns.datW == nil {
				ns.mu.Unlock()
				continue
			}
			if s.opts.Rotate > 0 && ns.written && time.Since(ns.lastJump) >= time.Duration(s.opts.Rotate)*time.Second {
				if err := ns.jump(); err != nil {
					s.log.WithField("ns", ns.name).Errorf("rotate: %v", err)
				}
			}
			if s.opts.SyncTime > 0 && time.Since(ns.lastSync) >= time.Duration(s.opts.SyncTime)*time.Second {
				ns.datW.Sync()
				ns.idxW.Sync()
				ns.lastSync = time.Now()
			}
			ns.mu.Unlock()
		}
	}
}

// dumpIndexes prints every index record of every namespace (--dump).
func dumpIndexes(s *Store, w io.Writer) error {
	for _, ns := range s.All() {
		ns.mu.RLock()
		fmt.Fprintf(w, "[+] namespace %s: mode %s, %d entries, files 0..%d\n", ns.name, ns.modeName(), ns.entries, ns.curID)
		for id := uint32(0); id <= ns.curID; id++ {
			recs, err := ns.readRecords(id)
			if err != nil {
				ns.mu.RUnlock()
				return fmt.Errorf("dump %s i%d: %w", ns.name, id, err)
			}
			for _, r := range recs {
				fmt.Fprintf(w, "i%d +%d: key %x, data d%d +%d, %d bytes, flags %d, crc %08x, ts %d\n",
					id, r.off, r.key, maxU32(r.item.dataID, id), r.item.offset, r.item.length, r.item.flags, r.item.crc, r.item.timestamp)
			}
		}
		ns.mu.RUnlock()
	}
	return nil
}

package zstor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
	"github.com/qsfs/qsfs/zstor/proto"
)

// Hook environment. zdb passes its own environment to hooks unchanged, so
// the plugin sets these on the zdb process.
const (
	EnvConfig         = "QSFS_ZSTOR_CONFIG"         // zstor.toml of the volume (required)
	EnvIndexDir       = "QSFS_ZDB_INDEX"            // zdb --index dir (default /data/index)
	EnvDataDir        = "QSFS_ZDB_DATA"             // zdb --data dir (default /data/data)
	EnvNamespaces     = "QSFS_HOOK_NAMESPACES"      // namespaces restored by namespaces-init (default zdbfs-meta,zdbfs-data)
	EnvHookLog        = "QSFS_HOOK_LOG"             // optional log file of the hook
	EnvRestoreTimeout = "QSFS_HOOK_RESTORE_TIMEOUT" // how long namespaces-init retries backend errors (default 5m)
	tempNamespace     = "zdbfs-temp"
	hookTmpPrefix     = "zdb.hook.tmp." // copies of index files, as hook.sh names them
)

// hookEnv is what the hook needs to act.
type hookEnv struct {
	cfgPath    string
	cfg        *config.Config
	indexDir   string
	dataDir    string
	namespaces []string
	log        *logrus.Entry
	eng        *engine.Engine
	daemonOnly bool // no in-process fallback when the config has a socket
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// HookMain runs `qsfs hook` with args (zdb's argv without the program:
// event, instance id, event arguments) and returns the exit status.
func HookMain(args []string) int {
	l := logrus.New()
	l.SetOutput(os.Stdout)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	if p := os.Getenv(EnvHookLog); p != "" {
		if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			defer f.Close()
			l.SetOutput(io.MultiWriter(os.Stdout, f))
		}
	}
	if os.Getenv("QSFS_HOOK_DEBUG") != "" {
		l.SetLevel(logrus.DebugLevel)
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: qsfs hook <event> <instance-id> [args...] (environment: "+EnvConfig+")")
		return 2
	}
	event := args[0]
	log := logrus.NewEntry(l).WithFields(logrus.Fields{"component": "hook", "event": event})
	switch event {
	case "ready":
		// zdb aborts its start-up when ready fails: do that while a
		// namespace restore is incomplete.
		if ns := incompleteRestores(getenv(EnvIndexDir, "/data/index")); len(ns) > 0 {
			log.WithField("namespaces", strings.Join(ns, ",")).Error("restore from the backends did not complete; refusing to start on partial data (fix the backends and start again)")
			return 1
		}
		// Queue closed files that never got stored (a daemon stopped
		// before trying them) from a detached child: ready blocks zdb.
		startRescan(args[1], log)
		return 0
	case "close", "crash", "namespace-deleted", "namespace-reloaded":
		return 0
	}
	h := &hookEnv{
		cfgPath:  os.Getenv(EnvConfig),
		indexDir: getenv(EnvIndexDir, "/data/index"),
		dataDir:  getenv(EnvDataDir, "/data/data"),
		log:      log,
	}
	h.namespaces = strings.Split(getenv(EnvNamespaces, "zdbfs-meta,zdbfs-data"), ",")
	if h.cfgPath == "" {
		log.Error(EnvConfig + " is not set: the hook does not know the zstor config")
		return 1
	}
	cfg, err := loadConfig(h.cfgPath)
	if err != nil {
		log.WithError(err).Error("load zstor config")
		return 1
	}
	h.cfg = cfg
	if err := h.run(event, args[2:]); err != nil {
		log.WithError(err).Error("hook failed")
		return 1
	}
	return 0
}

func (h *hookEnv) run(event string, a []string) error {
	arg := func(i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	switch event {
	case rescanEvent:
		return h.rescan()
	case "namespaces-init":
		if arg(0) != "" {
			h.indexDir = arg(0)
		}
		if arg(1) != "" {
			h.dataDir = arg(1)
		}
		return h.restore()
	case "namespace-created", "namespace-updated":
		ns := arg(0)
		if ns == "" || ns == tempNamespace {
			return nil
		}
		return h.store(filepath.Join(h.indexDir, ns, "zdb-namespace"), "", false)
	case "jump-index":
		old := arg(0)
		if old == "" || nsOf(old) == tempNamespace {
			return nil
		}
		return h.jumpIndex(old, a[2:])
	case "jump-data":
		old := arg(0)
		if old == "" || nsOf(old) == tempNamespace {
			return nil
		}
		return h.store(old, "", false)
	case "namespace-closing":
		ns := arg(0)
		if ns == "" || ns == tempNamespace {
			return nil
		}
		idx, data := arg(1), arg(2)
		var errs []error
		for _, f := range []string{idx, data} {
			if f != "" {
				errs = append(errs, h.store(f, "", false))
			}
		}
		for _, id := range a[min(3, len(a)):] {
			for _, f := range strings.Fields(id) {
				errs = append(errs, h.store(filepath.Join(filepath.Dir(idx), "i"+f), "", false))
			}
		}
		return errors.Join(errs...)
	case "missing-data":
		if arg(0) == "" {
			return errors.New("missing-data without a path")
		}
		return h.retrieve(arg(0))
	}
	return fmt.Errorf("unknown hook event %q", event)
}

// nsOf returns the namespace directory name of a zdb file path.
func nsOf(p string) string { return filepath.Base(filepath.Dir(p)) }

// jumpIndex copies the old index file and the dirty ones first (index files
// are mutable) and queues them for upload as if they lived in the index
// directory; the copies are deleted after upload.
func (h *hookEnv) jumpIndex(old string, dirty []string) error {
	dir := filepath.Dir(old)
	names := map[string]bool{filepath.Base(old): true}
	for _, d := range dirty {
		for _, id := range strings.Fields(d) {
			names["i"+id] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	_, err := h.storeIndexCopies(dir, sorted)
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// send runs a command through the daemon when one listens on the socket,
// else in-process, and returns an error response as an error.
func (h *hookEnv) send(c *proto.Command) error {
	_, err := h.do(c)
	return err
}

// do runs a command like send and returns the response.
func (h *hookEnv) do(c *proto.Command) (*proto.Response, error) {
	if h.cfg.Socket != "" {
		if conn, err := dialDaemon(h.cfg.Socket); err == nil {
			defer conn.Close()
			r, err := conn.do(c)
			if err != nil {
				return nil, err
			}
			if r.Kind == proto.Err {
				return nil, errors.New(r.Err)
			}
			return r, nil
		} else if h.daemonOnly {
			return nil, err
		}
	}
	if h.eng == nil {
		eng, err := engine.New(h.cfg, h.log)
		if err != nil {
			return nil, err
		}
		h.eng = eng
	}
	r := execute(h.eng, c, h.log)
	if r.Kind == proto.Err {
		return nil, errors.New(r.Err)
	}
	return r, nil
}

func (h *hookEnv) store(file, keyDir string, del bool) error {
	c := &proto.Command{Kind: proto.Store, File: file, SaveFailure: true, Delete: del}
	if keyDir != "" {
		c.KeyPath = &keyDir
	}
	h.log.WithField("file", file).Debug("queue upload")
	return h.send(c)
}

func (h *hookEnv) retrieve(file string) error {
	return h.send(&proto.Command{Kind: proto.Retrieve, File: file})
}

// errNotStored tells restore that a file has no metadata.
func isNotFound(err error) bool {
	return err != nil && strings.Contains(err.Error(), engine.ErrNotFound.Error())
}

// restoreMarker is left in the index root while a namespace restore is
// not complete; the ready hook then refuses to let zdb start, because an
// empty or partial namespace would later overwrite the archived objects.
func restoreMarker(indexDir, ns string) string {
	return filepath.Join(indexDir, ".qsfs-restore-"+ns)
}

// incompleteRestores lists the namespaces whose restore did not finish.
func incompleteRestores(indexDir string) []string {
	m, _ := filepath.Glob(filepath.Join(indexDir, ".qsfs-restore-*"))
	var out []string
	for _, p := range m {
		out = append(out, strings.TrimPrefix(filepath.Base(p), ".qsfs-restore-"))
	}
	return out
}

// restore brings back, for each archived namespace whose local index is
// missing (or whose earlier restore did not finish): zdb-namespace,
// i0..iN until one is not stored, then d<N>. Backend errors are retried for
// QSFS_HOOK_RESTORE_TIMEOUT (default 5m); a namespace that still fails keeps
// its marker, and the ready hook then stops zdb.
func (h *hookEnv) restore() error {
	start := time.Now()
	timeout := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv(EnvRestoreTimeout)); err == nil {
		timeout = d
	}
	files, bytes := 0, int64(0)
	for _, ns := range h.namespaces {
		ns = strings.TrimSpace(ns)
		if ns == "" || ns == tempNamespace {
			continue
		}
		marker := restoreMarker(h.indexDir, ns)
		_, statErr := os.Stat(filepath.Join(h.indexDir, ns, "zdb-namespace"))
		_, markErr := os.Stat(marker)
		if statErr == nil && markErr != nil {
			continue // local state present: nothing to restore
		}
		if err := os.MkdirAll(h.indexDir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
			return fmt.Errorf("restore marker: %w", err)
		}
		deadline := time.Now().Add(timeout)
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			n, b, err := h.restoreNamespace(ns)
			files, bytes = files+n, bytes+b
			if err == nil {
				break
			}
			if time.Now().Add(wait).After(deadline) {
				return fmt.Errorf("restore namespace %s: %w (zdb will be stopped by the ready hook)", ns, err)
			}
			h.log.WithError(err).WithFields(logrus.Fields{"namespace": ns, "retry_in": wait.String()}).Warn("restore failed, retrying")
			time.Sleep(wait)
		}
		if err := os.Remove(marker); err != nil {
			return fmt.Errorf("restore marker: %w", err)
		}
	}
	if files > 0 {
		h.log.WithFields(logrus.Fields{"files": files, "bytes": bytes, "seconds": time.Since(start).Seconds()}).Info("restored namespaces from backends")
	}
	return nil
}

// restoreNamespace retrieves one namespace's files and returns how many
// files and bytes it brought back.
func (h *hookEnv) restoreNamespace(ns string) (int, int64, error) {
	idxDir := filepath.Join(h.indexDir, ns)
	files, bytes := 0, int64(0)
	got := func(p string) error {
		if err := h.retrieve(p); err != nil {
			return err
		}
		files++
		if st, err := os.Stat(p); err == nil {
			bytes += st.Size()
		}
		h.log.WithFields(logrus.Fields{"files": files, "bytes": bytes}).Infof("qsfs restore: %s (%d files, %s so far)", p, files, humanBytes(bytes))
		return nil
	}
	if err := got(filepath.Join(idxDir, "zdb-namespace")); err != nil {
		if isNotFound(err) {
			h.log.WithField("namespace", ns).Info("nothing archived for namespace, starting empty")
			return files, bytes, nil
		}
		return files, bytes, err
	}
	last := -1
	for i := 0; ; i++ {
		err := got(filepath.Join(idxDir, "i"+strconv.Itoa(i)))
		if isNotFound(err) {
			break
		}
		if err != nil {
			return files, bytes, err
		}
		last = i
	}
	if last >= 0 {
		p := filepath.Join(h.dataDir, ns, "d"+strconv.Itoa(last))
		if err := got(p); err != nil && !isNotFound(err) {
			return files, bytes, err
		}
	}
	return files, bytes, nil
}

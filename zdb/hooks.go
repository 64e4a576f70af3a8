package zdb

import (
	"errors"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// hookExpire is how long a finished hook stays in the HOOKS list
// (ZDB_HOOKS_EXPIRE_SECONDS).
const hookExpire = 300 * time.Second

// hookRun is one hook process as HOOKS reports it.
type hookRun struct {
	event    string
	args     []string // after the instance id
	pid      int
	created  int64
	finished int64
	status   int
}

// hookRunner executes the --hook program: argv = [hook, event, instance-id,
// args...], no shell, zdb's own environment and working directory.
type hookRunner struct {
	path string
	id   string
	log  *logrus.Entry

	mu   sync.Mutex
	runs []*hookRun
	wg   sync.WaitGroup
}

// run starts the hook for event. When wait is true it blocks and returns
// the exit status (-1 when it could not run); otherwise it returns 0 at
// once. Without --hook it returns 0.
func (h *hookRunner) run(event string, wait bool, args ...string) int {
	if h == nil || h.path == "" {
		return 0
	}
	argv := append([]string{event, h.id}, args...)
	cmd := exec.Command(h.path, argv...)
	cmd.Args[0] = h.path
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	rec := &hookRun{event: event, args: args, created: time.Now().Unix()}
	if err := cmd.Start(); err != nil {
		h.log.WithField("event", event).Errorf("start hook: %v", err)
		rec.finished, rec.status = time.Now().Unix(), -1
		h.record(rec)
		return -1
	}
	rec.pid = cmd.Process.Pid
	h.record(rec)
	h.log.WithFields(logrus.Fields{"event": event, "pid": rec.pid}).Debug("hook started")
	finish := func() int {
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		h.mu.Lock()
		rec.finished, rec.status = time.Now().Unix(), code
		h.mu.Unlock()
		return code
	}
	if wait {
		return finish()
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		finish()
	}()
	return 0
}

func (h *hookRunner) record(r *hookRun) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now().Unix()
	kept := h.runs[:0]
	for _, o := range h.runs {
		if o.finished == 0 || now-o.finished < int64(hookExpire/time.Second) {
			kept = append(kept, o)
		}
	}
	h.runs = append(kept, r)
}

// list returns a snapshot of the known hook runs.
func (h *hookRunner) list() []hookRun {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now().Unix()
	out := make([]hookRun, 0, len(h.runs))
	for _, r := range h.runs {
		if r.finished != 0 && now-r.finished >= int64(hookExpire/time.Second) {
			continue
		}
		out = append(out, *r)
	}
	return out
}

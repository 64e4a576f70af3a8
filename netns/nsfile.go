package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsfsMagic is the statfs type of a bind-mounted namespace file.
const nsfsMagic = 0x6e736673

// isNSFile reports whether path is a live (bind-mounted) namespace file.
func isNSFile(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == nsfsMagic
}

// ensureRunDir creates /run/netns and makes it a shared mount, as
// `ip netns add` does, so namespaces created by a plugin in its own mount
// namespace propagate to the host when the directory is bind-mounted rshared.
func ensureRunDir() error {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", runDir, err)
	}
	err := unix.Mount("", runDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it on itself first.
		if err := unix.Mount(runDir, runDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s: %w", runDir, err)
		}
		err = unix.Mount("", runDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", runDir, err)
	}
	return nil
}

// createNamed makes the named namespace unless a live one exists already.
func createNamed(name string) error {
	path := nsPath(name)
	if isNSFile(path) {
		return nil
	}
	if err := ensureRunDir(); err != nil {
		return err
	}
	// A leftover plain file (a crash between create and mount) is removed.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", path, err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		created, err := vns.NewNamed(name)
		if err == nil {
			created.Close()
		}
		if serr := vns.Set(orig); serr != nil {
			// The thread stays locked and dies with this goroutine.
			errc <- errors.Join(err, fmt.Errorf("return to host netns: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("create netns %s: %w", name, err)
		}
		errc <- err
	}()
	return <-errc
}

// deleteNamed unmounts and removes the namespace file; no error when gone.
func deleteNamed(name string) error {
	path := nsPath(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// openNS opens a namespace by name or path.
func openNS(ns string) (vns.NsHandle, error) {
	h, err := vns.GetFromPath(nsPath(ns))
	if err != nil {
		return vns.None(), fmt.Errorf("open netns %s: %w", ns, err)
	}
	return h, nil
}

// inNS runs fn on an OS thread that has entered namespace ns. Programs that
// fn execs (iptables) inherit that namespace.
func inNS(ns string, fn func() error) error {
	target, err := openNS(ns)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := vns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := vns.Set(orig); err != nil {
			// Leave the thread locked: it is discarded with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// lockFile serialises Setup and Teardown between processes (and goroutines,
// with mu) so that address allocation and shared chains do not race.
const lockFile = "/run/qsfs-netns.lock"

func withLock(fn func() error) error {
	mu.Lock()
	defer mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return fmt.Errorf("create lock dir: %w", err)
	}
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", lockFile, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lockFile, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN) //nolint:errcheck // closing releases it too
	return fn()
}

package driver

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// This file is one volume's lifecycle: Mount, Unmount, Remove, and the
// plugin-wide Restore and Shutdown that apply it to every volume.

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
			err := st.stopFSWithin(timeout)
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
	case <-time.After(timeout):
		d.log.Warn("shutdown timed out")
	}
	d.graveyard.Shutdown(timeout)
}

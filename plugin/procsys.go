package plugin

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// writableProcSys makes /proc/sys writable when it is a read-only mount, as
// in a managed plugin (runc mounts it read-only): the host's IP forwarding
// sysctls must be set for the volumes' namespaces to reach their backends.
// The plugin runs in the host's network namespace, so these are the host's.
func writableProcSys() (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/sys", &st); err != nil {
		return false, fmt.Errorf("statfs /proc/sys: %w", err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return false, nil
	}
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
		return false, fmt.Errorf("remount /proc/sys read-write: %w", err)
	}
	return true, nil
}

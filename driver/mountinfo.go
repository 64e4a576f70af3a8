package driver

import "github.com/qsfs/qsfs/internal/mountinfo"

// MountedFS returns the filesystem type mounted at path ("" if none); the
// last entry of the mountinfo file wins, as the kernel's view does for
// stacked mounts.
func MountedFS(mountinfoPath, path string) (string, error) {
	e, _, err := mountinfo.At(mountinfoPath, path)
	return e.FSType, err
}

package zdbfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/qsfs/qsfs/internal/mountinfo"
)

// Process plumbing: background mode and the auto_unmount watchdog.

// background re-executes zdbfs detached and returns once the mount is live.
func background(args []string, o *Options) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"zdbfs"}, args...)...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.Logfile == "" {
		cmd.Stdout, cmd.Stderr = nil, nil
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: start background process: %v\n", err)
		return 1
	}
	w.Close()
	msg, _ := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if msg != "ok\n" {
		fmt.Fprintf(os.Stderr, "qsfs zdbfs: background process failed to mount %s%s\n", o.Mountpoint, msg)
		return 1
	}
	return 0
}

func notifyReady(failure error) {
	fd, err := strconv.Atoi(os.Getenv(readyEnv))
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if failure != nil {
		fmt.Fprintf(f, ": %v\n", failure)
	} else {
		f.WriteString("ok\n")
	}
	f.Close()
	os.Unsetenv(readyEnv)
}

// startWatchdog implements auto_unmount for a direct (root) mount: a child
// process waits for the returned pipe to close, which happens when this
// process exits however it exits, and then detaches the mount if it is
// still there.
func startWatchdog(mnt string) (*os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "zdbfs", mnt)
	cmd.Env = append(os.Environ(), watchEnv+"=1")
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	r.Close()
	go cmd.Wait()
	return w, nil
}

// watch is the watchdog: it returns when its parent's pipe closes.
func watch(mnt string) int {
	io.Copy(io.Discard, os.Stdin)
	if mountedZdbfs(mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
	return 0
}

func mountedZdbfs(mnt string) bool {
	e, ok, err := mountinfo.At(mountinfo.Self, mnt)
	return err == nil && ok && e.FSType == "fuse.zdbfs"
}

package netns

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Command returns a command that runs prog with args inside network
// namespace ns (a name under /run/netns or a path) through
// `self nsexec ns -- prog args...`, where self is the qsfs binary.
func Command(self, ns, prog string, args ...string) *exec.Cmd {
	return exec.Command(self, append([]string{"nsexec", ns, "--", prog}, args...)...)
}

// ExecMain runs `qsfs nsexec <netns> -- <program> [args...]`: it enters the
// named network namespace (a name under /run/netns or a path) on a locked OS
// thread and execs program there, keeping the environment. It returns only
// on error.
func ExecMain(args []string) int {
	if len(args) >= 2 && args[1] == "--" {
		args = append(args[:1:1], args[2:]...)
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: qsfs nsexec <netns> -- <program> [args...]")
		return 2
	}
	ns, argv := args[0], args[1:]
	if err := execIn(ns, argv); err != nil {
		fmt.Fprintf(os.Stderr, "qsfs nsexec: %v\n", err)
		return 1
	}
	return 0 // not reached
}

func execIn(ns string, argv []string) error {
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("find %q: %w", argv[0], err)
	}
	// The exec replaces the whole process from this thread, which keeps the
	// namespace it entered.
	runtime.LockOSThread()
	fd, err := unix.Open(nsPath(ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", ns, err)
	}
	unix.Close(fd)
	if err := syscall.Exec(prog, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", prog, err)
	}
	return nil
}

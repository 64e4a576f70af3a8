package zdb

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// backgroundEnv marks the re-executed child of --background; its value is
// the file descriptor number of the pipe used to report readiness.
const backgroundEnv = "QSFS_ZDB_BACKGROUND_FD"

// daemonize re-executes the program detached from the terminal and returns
// once the child reports it is ready (official forks when ready).
func daemonize(args []string) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "zdb: background: %v\n", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "zdb: background: %v\n", err)
		return 1
	}
	// "zdb" selects the subcommand; under a "zdb" symlink name it is an
	// ignored non-option argument
	cmd := exec.Command(exe, append([]string{"zdb"}, args...)...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), backgroundEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	cmd.Stdin = devnull
	cmd.Stdout = devnull
	cmd.Stderr = devnull
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "zdb: background: %v\n", err)
		return 1
	}
	w.Close()
	buf := make([]byte, 1)
	n, _ := r.Read(buf)
	if n == 1 && buf[0] == 'R' {
		return 0
	}
	fmt.Fprintln(os.Stderr, "zdb: background server failed to start")
	return 1
}

// readyPipe is the pipe to a waiting --background parent, taken from the
// environment at start so hooks never see the marker.
var readyPipe *os.File

func takeReadyPipe() {
	if os.Getenv(backgroundEnv) == "" {
		return
	}
	os.Unsetenv(backgroundEnv)
	readyPipe = os.NewFile(3, "ready")
}

// notifyReady tells a waiting --background parent that the server is up.
func notifyReady() {
	if readyPipe == nil {
		return
	}
	readyPipe.Write([]byte{'R'})
	readyPipe.Close()
	readyPipe = nil
}

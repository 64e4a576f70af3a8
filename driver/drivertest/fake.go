// Package drivertest gives the driver's and the plugin's tests stand-in
// stack programs, run by re-executing the test binary: a zdb that answers
// PING on its socket, a zdbfs that loopback-mounts a directory as
// fuse.zdbfs, a zstor that listens on its socket, and a program that prints
// lines and fails. They let the driver's lifecycle (mount waiting, process
// supervision, cleanup) be tested without the real components; the bats
// suite runs the real ones.
//
// A test package calls RunIfFake() first in its TestMain.
package drivertest

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const (
	envFake = "QSFS_DRIVERTEST_FAKE"
	envGate = "QSFS_DRIVERTEST_GATE"
)

// RunIfFake runs the fake program named by the environment and exits, or
// returns when the process is an ordinary test run.
func RunIfFake() {
	which := os.Getenv(envFake)
	if which == "" {
		return
	}
	var err error
	switch which {
	case "zdb":
		err = fakeZdb(os.Args[1:])
	case "zdbfs":
		err = fakeZdbfs(os.Args[1:])
	case "zdbfs-gated":
		// Waits until the gate file exists, then behaves as zdbfs: a
		// Mount that stays slow for as long as a test wants.
		for {
			if _, serr := os.Stat(os.Getenv(envGate)); serr == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		err = fakeZdbfs(os.Args[1:])
	case "zstor":
		err = fakeZstor(os.Args[1:])
	case "fail":
		fmt.Println("fake: starting")
		fmt.Println("fake: cannot open backend: connection refused")
		os.Exit(3)
	default:
		err = fmt.Errorf("unknown fake %q", which)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake "+which+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Program returns a wrapper script that runs the test binary as the fake
// which ("zdb", "zdbfs", "zstor", "fail"), for driver.Programs.
func Program(dir, which string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "fake-"+which)
	script := fmt.Sprintf("#!/bin/sh\nexport %s=%s\nexec %q \"$@\"\n", envFake, which, self)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

// GatedProgram is Program for a zdbfs that mounts only once the file gate
// exists.
func GatedProgram(dir, gate string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "fake-zdbfs-gated")
	script := fmt.Sprintf("#!/bin/sh\nexport %s=zdbfs-gated %s=%q\nexec %q \"$@\"\n", envFake, envGate, gate, self)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}

// fakeZdb listens on --socket and answers RESP: +PONG to PING, an error to
// NSINFO (no namespaces), +OK to anything else.
func fakeZdb(args []string) error {
	sock := ""
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--socket" {
			sock = args[i+1]
		}
	}
	if sock == "" {
		return fmt.Errorf("no --socket")
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("fake zdb: listening on", sock)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveRESP(c)
		}
	}()
	waitSignal()
	fmt.Println("fake zdb: stopping")
	return nil
}

func serveRESP(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		cmd, err := readCommand(r)
		if err != nil {
			return
		}
		switch strings.ToUpper(cmd) {
		case "PING":
			fmt.Fprint(c, "+PONG\r\n")
		case "NSINFO":
			fmt.Fprint(c, "-Namespace not found\r\n")
		default:
			fmt.Fprint(c, "+OK\r\n")
		}
	}
}

// readCommand reads one RESP array of bulk strings and returns its first
// element.
func readCommand(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line + " x")[0], nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return "", err
	}
	first := ""
	for i := 0; i < n; i++ {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		size, err := strconv.Atoi(strings.TrimRight(hdr, "\r\n")[1:])
		if err != nil {
			return "", err
		}
		buf := make([]byte, size+2)
		if _, err := ioReadFull(r, buf); err != nil {
			return "", err
		}
		if i == 0 {
			first = string(buf[:size])
		}
	}
	return first, nil
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fakeZdbfs mounts ./fakefs (in its working directory) at the mountpoint as
// fuse.zdbfs and serves until unmounted or signalled.
func fakeZdbfs(args []string) error {
	fl := flag.NewFlagSet("zdbfs", flag.ContinueOnError)
	var opts string
	fl.StringVar(&opts, "o", "", "options")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return fmt.Errorf("want one mountpoint, got %q", fl.Args())
	}
	if !strings.Contains(opts, "unix=") {
		return fmt.Errorf("no unix= option in %q", opts)
	}
	backing, _ := filepath.Abs("fakefs")
	if err := os.MkdirAll(backing, 0o755); err != nil {
		return err
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return err
	}
	srv, err := fs.Mount(fl.Arg(0), root, &fs.Options{MountOptions: fuse.MountOptions{
		AllowOther: true, FsName: "zdbfs", Name: "zdbfs", DirectMountStrict: true,
	}})
	if err != nil {
		return err
	}
	fmt.Println("fake zdbfs: mounted", fl.Arg(0))
	go func() {
		waitSignal()
		_ = srv.Unmount()
	}()
	srv.Wait()
	fmt.Println("fake zdbfs: unmounted")
	return nil
}

// fakeZstor listens on the socket named in the config (-c) until signalled.
func fakeZstor(args []string) error {
	cfg := ""
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-c" {
			cfg = args[i+1]
		}
	}
	data, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	sock := ""
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "socket" {
			sock = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	if sock == "" {
		return fmt.Errorf("no socket in %s", cfg)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("fake zstor: monitor on", sock)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			fmt.Println("fake zstor: reloaded")
			_ = os.WriteFile(cfg+".reloaded", []byte(time.Now().String()), 0o600)
		}
	}()
	waitSignal()
	return nil
}

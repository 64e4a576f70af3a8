package nstest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fallbackEnv names the variable that makes a test binary act as a minimal
// RESP server (PING, SET, GET) instead of running tests. It stands in for
// `qsfs zdb` while that subcommand is not built, so the isolation tests still
// exercise real TCP traffic through the firewall.
const fallbackEnv = "QSFS_NSTEST_RESP_LISTEN"

// Main is TestMain for packages using Serve: it runs the fallback server
// when asked to, else the tests.
func Main(m *testing.M) {
	if addr := os.Getenv(fallbackEnv); addr != "" {
		if err := serveRESP(addr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func serveRESP(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	store := map[string]string{}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				args, err := readCommand(r)
				if err != nil {
					return
				}
				var reply string
				mu.Lock()
				switch strings.ToUpper(args[0]) {
				case "PING":
					reply = "+PONG\r\n"
				case "SET":
					if len(args) == 3 {
						store[args[1]] = args[2]
					}
					reply = "+OK\r\n"
				case "GET":
					if v, ok := store[args[1%len(args)]]; ok {
						reply = "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n"
					} else {
						reply = "$-1\r\n"
					}
				default:
					reply = "-ERR unknown command\r\n"
				}
				mu.Unlock()
				if _, err := io.WriteString(c, reply); err != nil {
					return
				}
			}
		}()
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), nil // inline command
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array %q", line)
	}
	args := make([]string, n)
	for i := range args {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimRight(hdr, "\r\n")[1:])
		if err != nil || size < 0 {
			return nil, fmt.Errorf("bad bulk %q", hdr)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

package zdbproc

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"time"

	vns "github.com/vishvananda/netns"

	"github.com/qsfs/qsfs/zdb/client"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. It
// is a variable so that the package's tests can hand out a taken port.
var freePort = func() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ping dials network/addr (from inside network namespace ns when not "")
// and checks that the server answers PING.
func ping(ns, network, addr string, timeout time.Duration) error {
	nc, err := dialIn(ns, network, addr, timeout)
	if err != nil {
		return err
	}
	c := client.NewConn(nc, timeout)
	defer c.Close()
	if err := c.Ping(); err != nil {
		return fmt.Errorf("ping %s %s: %w", network, addr, err)
	}
	return nil
}

// dialIn opens a connection from inside network namespace ns (a name under
// /run/netns or a path; "" is the test's own). The socket is created on a
// locked OS thread switched into ns and stays in ns after the thread
// switches back.
func dialIn(ns, network, addr string, timeout time.Duration) (net.Conn, error) {
	if ns == "" {
		return net.DialTimeout(network, addr, timeout)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("current netns: %w", err)}
			return
		}
		defer orig.Close()
		var h vns.NsHandle
		if strings.Contains(ns, "/") {
			h, err = vns.GetFromPath(ns)
		} else {
			h, err = vns.GetFromName(ns)
		}
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open netns %s: %w", ns, err)}
			return
		}
		defer h.Close()
		if err := vns.Set(h); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter netns %s: %w", ns, err)}
			return
		}
		c, err := net.DialTimeout(network, addr, timeout)
		if err := vns.Set(orig); err == nil {
			// back in the test's namespace; a thread that could not
			// switch back stays locked and ends with this goroutine
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

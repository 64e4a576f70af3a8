package zstor

import (
	"fmt"
	"net"
	"time"

	"github.com/qsfs/qsfs/zstor/proto"
)

// daemonConn is a client connection to a running daemon's socket.
type daemonConn struct{ c net.Conn }

func dialDaemon(socket string) (*daemonConn, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to zstor daemon %s: %w", socket, err)
	}
	return &daemonConn{c: c}, nil
}

func (d *daemonConn) Close() error { return d.c.Close() }

// do sends one command and waits for its response (blocking commands wait
// until the daemon finished them).
func (d *daemonConn) do(cmd *proto.Command) (*proto.Response, error) {
	b, err := cmd.Marshal()
	if err != nil {
		return nil, err
	}
	if err := proto.WriteFrame(d.c, b); err != nil {
		return nil, fmt.Errorf("send command to zstor daemon: %w", err)
	}
	rb, err := proto.ReadFrame(d.c)
	if err != nil {
		return nil, fmt.Errorf("read zstor daemon response: %w", err)
	}
	return proto.UnmarshalResponse(rb)
}

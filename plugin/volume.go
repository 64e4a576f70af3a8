package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qsfs/qsfs/driver"
	"github.com/qsfs/qsfs/netns"
)

// optionList collects repeated -o key=value flags.
type optionList map[string]string

func (o optionList) String() string { return "" }

func (o optionList) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("option %q: write key=value", v)
	}
	o[k] = val
	return nil
}

// VolumeMain runs `qsfs volume update|status` with args and returns the exit
// status. It talks to the running plugin over its socket.
func VolumeMain(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		volumeUsage(os.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	if cmd == "teardown" {
		return teardownMain(args[1:])
	}
	fs := flag.NewFlagSet("qsfs volume "+cmd, flag.ContinueOnError)
	socket := fs.String("socket", "", "plugin socket (default $QSFS_SOCKET, /run/docker/plugins/qsfs.sock, or the one managed plugin socket)")
	opts := optionList{}
	if cmd == "update" {
		fs.Var(opts, "o", "volume option key=value (repeatable)")
	}
	// Allow NAME before or after the flags.
	var name string
	rest := args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		volumeUsage(os.Stderr)
		return 2
	}
	sock, err := findSocket(*socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsfs volume: %v\n", err)
		return 1
	}
	c := NewClient(sock)
	switch cmd {
	case "update":
		msg, err := c.Update(name, opts)
		if err != nil {
			fmt.Fprintf(os.Stderr, "qsfs volume update: %v\n", err)
			return 1
		}
		fmt.Printf("%s: %s\n", name, msg)
	case "forget-mounts":
		var resp ForgetResponse
		if err := c.Call(ForgetPath, StatusRequest{Name: name}, &resp); err != nil || resp.Err != "" {
			if err == nil {
				err = fmt.Errorf("%s", resp.Err)
			}
			fmt.Fprintf(os.Stderr, "qsfs volume forget-mounts: %v\n", err)
			return 1
		}
		fmt.Printf("%s: dropped %d mount references\n", name, resp.Dropped)
	case "status":
		st, err := c.Status(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "qsfs volume status: %v\n", err)
			return 1
		}
		st.FormatTable(os.Stdout)
	default:
		volumeUsage(os.Stderr)
		return 2
	}
	return 0
}

func volumeUsage(w io.Writer) {
	fmt.Fprintln(w, `usage:
  qsfs volume update NAME -o key=value [-o key=value ...] [--socket PATH]
  qsfs volume status NAME [--socket PATH]
  qsfs volume forget-mounts NAME [--socket PATH]
                               drop mount IDs orphaned by a crashed engine
                               (no container may use the volume)
  qsfs volume teardown ID...   remove the network namespace, veth and host
                               rules of volume ids left behind (no plugin needed)`)
}

// findSocket picks the plugin socket: the flag, $QSFS_SOCKET, the host
// mode socket, or the only managed-plugin socket under /run/docker/plugins.
func findSocket(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv("QSFS_SOCKET"); v != "" {
		return v, nil
	}
	const host = "/run/docker/plugins/qsfs.sock"
	if _, err := os.Stat(host); err == nil {
		return host, nil
	}
	matches, _ := filepath.Glob("/run/docker/plugins/*/qsfs.sock")
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return "", fmt.Errorf("no qsfs plugin socket found: is the plugin running? (give --socket)")
	}
	return "", fmt.Errorf("several qsfs plugin sockets found (%s): choose one with --socket", strings.Join(matches, ", "))
}

// Client talks to a plugin socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client of the plugin at socket path.
func NewClient(path string) *Client {
	return &Client{http: &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Call posts req to the endpoint path and decodes the answer into resp.
func (c *Client) Call(path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := c.http.Post("http://plugin"+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("call %s: %w", path, err)
	}
	defer r.Body.Close()
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("call %s: %w", path, err)
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return fmt.Errorf("call %s: %s: %s", path, r.Status, strings.TrimSpace(string(data)))
	}
	return nil
}

// Update sends /Qsfs.Update.
func (c *Client) Update(name string, opts map[string]string) (string, error) {
	var resp UpdateResponse
	if err := c.Call(UpdatePath, UpdateRequest{Name: name, Opts: opts}, &resp); err != nil {
		return "", err
	}
	if resp.Err != "" {
		return "", fmt.Errorf("%s", resp.Err)
	}
	return resp.Message, nil
}

// Status sends /Qsfs.Status.
func (c *Client) Status(name string) (*driver.Status, error) {
	var resp StatusResponse
	if err := c.Call(StatusPath, StatusRequest{Name: name}, &resp); err != nil {
		return nil, err
	}
	if resp.Err != "" {
		return nil, fmt.Errorf("%s", resp.Err)
	}
	if resp.Status == nil {
		return nil, fmt.Errorf("volume %s: empty status", name)
	}
	return resp.Status, nil
}

// teardownMain removes what netns.Setup made for each volume id given; an
// operator's tool for leftovers of a plugin that was removed uncleanly.
func teardownMain(ids []string) int {
	if len(ids) == 0 {
		volumeUsage(os.Stderr)
		return 2
	}
	rc := 0
	for _, id := range ids {
		if err := netns.Teardown(id); err != nil {
			fmt.Fprintf(os.Stderr, "qsfs volume teardown: %v\n", err)
			rc = 1
		}
	}
	return rc
}

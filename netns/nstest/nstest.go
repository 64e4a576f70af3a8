// Package nstest gives tests of qsfs's network isolation real peers: test
// network namespaces of their own, joined to the host by veth pairs, running
// `qsfs zdb` (the volume backends of a test), and helpers to run redis-cli
// inside a namespace. Everything is named with the test process id and
// removed in t.Cleanup, even when the test fails. It owns nothing outside
// tests.
package nstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/qsfs/qsfs/internal/zdbproc"
	"github.com/qsfs/qsfs/netns"
)

// RequireRoot skips the test unless it runs as root with iptables, ip and
// redis-cli available.
func RequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and iptables rules")
	}
	for _, tool := range []string{"iptables", "ip6tables", "ip", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// VolumeID returns a volume id unique to this test process and n (0..4095),
// congruent to n modulo any power of two up to 2^20.
func VolumeID(n int) string {
	return fmt.Sprintf("7e%03x%06x%05x", n&0xfff, os.Getpid()&0xffffff, n&0xfff)
}

// Peer is a test namespace joined to the host by a veth pair, standing for a
// remote backend host.
type Peer struct {
	NS                   string // name under /run/netns
	HostIf               string
	Addr4, Addr6         netip.Addr // the peer's addresses
	HostAddr4, HostAddr6 netip.Addr // the host's addresses on the veth
}

// NewPeer creates peer number n (0..63) of this test process: namespace
// qfst<pid>-p<n>, veth qt<pid>p<n>, addresses in 198.18.0.0/15 and a ULA.
func NewPeer(t *testing.T, n int) *Peer {
	t.Helper()
	pid := os.Getpid()
	p := &Peer{
		NS:     fmt.Sprintf("qfst%d-p%d", pid, n),
		HostIf: fmt.Sprintf("qt%dp%d", pid%10000000, n),
	}
	// 198.18.0.0/15 holds 2^15 /30 blocks: 16 per process, by pid.
	block := uint32(pid%2048)*16 + uint32(n&15)
	v := 198<<24 | 18<<16 | block<<2
	base := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	p.HostAddr4, p.Addr4 = base.Next(), base.Next().Next()
	p6 := fmt.Sprintf("fdd5:7e57:%x:%x::", pid&0xffff, n)
	p.HostAddr6, p.Addr6 = netip.MustParseAddr(p6+"1"), netip.MustParseAddr(p6+"2")

	t.Cleanup(func() { p.remove(t) })
	if err := p.create(); err != nil {
		t.Fatalf("create peer %s: %v", p.NS, err)
	}
	return p
}

func (p *Peer) create() error {
	if err := exec.Command("ip", "netns", "add", p.NS).Run(); err != nil {
		return fmt.Errorf("ip netns add %s: %w", p.NS, err)
	}
	h, err := vns.GetFromName(p.NS)
	if err != nil {
		return err
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.HostIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(h)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", p.HostIf, err)
	}
	in, err := netlink.NewHandleAt(h)
	if err != nil {
		return err
	}
	defer in.Close()
	host, err := netlink.LinkByName(p.HostIf)
	if err != nil {
		return err
	}
	eth, err := in.LinkByName("eth0")
	if err != nil {
		return err
	}
	lo, err := in.LinkByName("lo")
	if err != nil {
		return err
	}
	add := func(h *netlink.Handle, l netlink.Link, a netip.Addr, bits int) error {
		return h.AddrAdd(l, &netlink.Addr{Flags: unix.IFA_F_NODAD,
			IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}})
	}
	hostH := &netlink.Handle{}
	for _, step := range []error{
		add(hostH, host, p.HostAddr4, 30), add(hostH, host, p.HostAddr6, 64),
		add(in, eth, p.Addr4, 30), add(in, eth, p.Addr6, 64),
		netlink.LinkSetUp(host), in.LinkSetUp(eth), in.LinkSetUp(lo),
	} {
		if step != nil {
			return step
		}
	}
	// Replies go back to the host (masqueraded traffic comes from the host's
	// veth address, others need the default route).
	for _, gw := range []netip.Addr{p.HostAddr4, p.HostAddr6} {
		if err := in.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			return fmt.Errorf("route via %s: %w", gw, err)
		}
	}
	return nil
}

func (p *Peer) remove(t *testing.T) {
	if l, err := netlink.LinkByName(p.HostIf); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			t.Errorf("delete veth %s: %v", p.HostIf, err)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", p.NS)); err == nil {
		if out, err := exec.Command("ip", "netns", "del", p.NS).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", p.NS, err, out)
		}
	}
}

// Serve starts `qsfs zdb` listening on port inside namespace ns (dual
// stack) and waits until it answers PING there. It is stopped (by PID) in
// t.Cleanup.
func Serve(t *testing.T, bin, ns string, port uint16) {
	t.Helper()
	dir := t.TempDir()
	zdbproc.Start(t, zdbproc.Options{Bin: bin, Dir: dir, NS: ns, TCP: true, Host: "::", Port: int(port),
		Args: []string{"--data", filepath.Join(dir, "data"), "--index", filepath.Join(dir, "index")}})
}

// Redis runs `redis-cli -h host -p port args...` inside namespace ns (the
// host's own when ns is "") and returns its trimmed output. It is killed
// after timeout, which is how a dropped connection shows.
func Redis(bin, ns string, timeout time.Duration, host any, port uint16, args ...string) (string, error) {
	return RedisStdin(bin, ns, timeout, nil, host, port, args...)
}

// RedisStdin is Redis with stdin (for `-x`).
func RedisStdin(bin, ns string, timeout time.Duration, stdin []byte, host any, port uint16, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append([]string{"-h", fmt.Sprint(host), "-p", strconv.Itoa(int(port))}, args...)
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.CommandContext(ctx, "redis-cli", argv...)
	} else {
		cmd = netns.Command(bin, ns, "redis-cli", argv...)
		cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	}
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), errors.New("timed out (no answer)")
	}
	s := strings.TrimSpace(string(out))
	if err == nil && strings.HasPrefix(s, "Could not connect") {
		err = errors.New(s)
	}
	return s, err
}

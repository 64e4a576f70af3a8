package zdbtest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NetGroup is a network namespace holding one group's backends, reached
// from the host over a veth pair with IPv6 ULA addresses private to the
// test (fd51:<pid>:<n>::/64).
type NetGroup struct {
	NS       string
	HostLink string
	peer     string
	prefix   string
	Addr     string // backends' address inside the namespace
	Backends []*Zdb
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// NeedNetns skips the test unless it runs as root with iproute2.
func NeedNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	for _, p := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
		if b, err := os.ReadFile(p); err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Skip("IPv6 is disabled on this host (the test namespaces use IPv6 addresses)")
		}
	}
}

// StartNetGroup creates namespace n of this test process and starts size
// backends in it. Everything is removed when the test ends.
func StartNetGroup(t testing.TB, n, size int) *NetGroup {
	t.Helper()
	pid := os.Getpid()
	g := &NetGroup{NS: fmt.Sprintf("qzst%d-%d", pid, n), HostLink: fmt.Sprintf("qz%dh%d", pid%1000000, n)}
	peer := fmt.Sprintf("qz%dn%d", pid%1000000, n)
	prefix := fmt.Sprintf("fd51:%x:%x", pid&0xffff, n)
	g.Addr = prefix + "::2"
	g.peer, g.prefix = peer, prefix
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", g.NS).Run()
		exec.Command("ip", "link", "del", g.HostLink).Run()
	})
	steps := [][]string{
		{"netns", "add", g.NS},
		{"link", "add", g.HostLink, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", g.NS},
		{"-6", "addr", "add", prefix + "::1/64", "dev", g.HostLink, "nodad"},
		{"link", "set", g.HostLink, "up"},
		{"-n", g.NS, "link", "set", "lo", "up"},
		{"-n", g.NS, "-6", "addr", "add", g.Addr + "/64", "dev", peer, "nodad"},
		{"-n", g.NS, "link", "set", peer, "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < size; i++ {
		z := &Zdb{Port: 9900 + i, Dir: t.TempDir(), t: t, NS: g.NS, Host: g.Addr}
		z.Start()
		z.setup()
		g.Backends = append(g.Backends, z)
	}
	return g
}

// SetLink takes the group's link down or up (a whole group lost or back).
func (g *NetGroup) SetLink(t testing.TB, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	if err := ipCmd("link", "set", g.HostLink, state); err != nil {
		t.Fatal(err)
	}
	if up { // IPv6 drops the addresses of a link that goes down
		for _, s := range [][]string{
			{"-6", "addr", "replace", g.prefix + "::1/64", "dev", g.HostLink, "nodad"},
			{"-n", g.NS, "-6", "addr", "replace", g.Addr + "/64", "dev", g.peer, "nodad"},
		} {
			if err := ipCmd(s...); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// NetCluster builds a Cluster from namespace groups.
func NetCluster(groups ...*NetGroup) *Cluster {
	cl := &Cluster{}
	for _, g := range groups {
		cl.Groups = append(cl.Groups, g.Backends)
		cl.All = append(cl.All, g.Backends...)
	}
	return cl
}

package netns_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/qsfs/qsfs/internal/testbin"
	"github.com/qsfs/qsfs/netns"
	"github.com/qsfs/qsfs/netns/nstest"
)

const (
	backendPort = 9900
	otherPort   = 9901
	metricsPort = 9100
)

// fails asserts that redis-cli PING gets no PONG.
func fails(t *testing.T, what, bin, ns string, host netip.Addr, port uint16) {
	t.Helper()
	out, err := nstest.Redis(bin, ns, 3*time.Second, host, port, "PING")
	t.Logf("%s: %s port %d from %q: %q %v", what, host, port, ns, out, err)
	if err == nil && out == "PONG" {
		t.Errorf("%s: %s port %d answered from %q, want no answer", what, host, port, ns)
	}
}

// answers asserts that redis-cli PING gets PONG.
func answers(t *testing.T, what, bin, ns string, host netip.Addr, port uint16) {
	t.Helper()
	if out, err := nstest.Redis(bin, ns, 10*time.Second, host, port, "PING"); err != nil || out != "PONG" {
		t.Errorf("%s: %s port %d from %q: %q %v, want PONG", what, host, port, ns, out, err)
	}
}

func TestIsolation(t *testing.T) {
	nstest.RequireRoot(t)
	bin := testbin.Path(t)
	b1, b2 := nstest.NewPeer(t, 1), nstest.NewPeer(t, 2)
	for _, p := range []*nstest.Peer{b1, b2} {
		nstest.Serve(t, bin, p.NS, backendPort)
	}
	nstest.Serve(t, bin, b1.NS, otherPort)

	id := nstest.VolumeID(1)
	t.Cleanup(func() { teardownAndCheck(t, id) })
	backends := []netip.AddrPort{
		netip.AddrPortFrom(b1.Addr4, backendPort),
		netip.AddrPortFrom(b1.Addr6, backendPort),
	}
	ns, err := netns.Setup(netns.Config{ID: id, Backends: backends, MetricsPort: metricsPort})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Name != "qfs-ns-"+id || len(ns.HostIf) > 15 || len(ns.NSIf) > 15 {
		t.Fatalf("namespace %+v", ns)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil || !strings.Contains(string(out), ns.Name) {
		t.Fatalf("ip netns list does not show %s: %s %v", ns.Name, out, err)
	}
	ids, err := netns.List()
	if err != nil || !contains(ids, id) {
		t.Fatalf("List() = %v %v, want %s in it", ids, err, id)
	}

	// Listeners inside the volume namespace: the metrics port and another.
	nstest.Serve(t, bin, ns.Name, metricsPort)
	nstest.Serve(t, bin, ns.Name, otherPort)

	// Dropped connections only show as a timeout, so the checks that must
	// fail run side by side.
	var wg sync.WaitGroup
	failsBG := func(t *testing.T, what, from string, host netip.Addr, port uint16) {
		wg.Add(1)
		go func() { defer wg.Done(); fails(t, what, bin, from, host, port) }()
	}
	t.Run("host reaches only the metrics port", func(t *testing.T) {
		for _, a := range []netip.Addr{ns.NSAddr4, ns.NSAddr6} {
			answers(t, "metrics port from host", bin, "", a, metricsPort)
			failsBG(t, "other port from host", "", a, otherPort)
		}
		wg.Wait()
	})
	t.Run("other hosts do not reach the metrics port", func(t *testing.T) {
		for _, a := range []netip.Addr{ns.NSAddr4, ns.NSAddr6} {
			failsBG(t, "metrics port from a backend host", b2.NS, a, metricsPort)
		}
		wg.Wait()
	})
	t.Run("namespace reaches only its backends", func(t *testing.T) {
		for _, a := range []netip.Addr{b1.Addr4, b1.Addr6} {
			answers(t, "backend", bin, ns.Name, a, backendPort)
			failsBG(t, "backend host, other port", ns.Name, a, otherPort)
		}
		for _, a := range []netip.Addr{b2.Addr4, b2.Addr6, b1.HostAddr4} {
			failsBG(t, "not a backend", ns.Name, a, backendPort)
		}
		wg.Wait()
	})

	t.Run("counters grow by the bytes sent, headers included", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
		for _, a := range []netip.Addr{b1.Addr4, b1.Addr6} {
			before := readCounters(t, id)
			// zdb answers SET with the key.
			key := "k-" + a.String()
			if out, err := nstest.RedisStdin(bin, ns.Name, 30*time.Second, payload, a, backendPort, "-x", "SET", key); err != nil || out != key {
				t.Fatalf("SET via %s: %q %v", a, out, err)
			}
			mid := readCounters(t, id)
			out, err := nstest.Redis(bin, ns.Name, 30*time.Second, a, backendPort, "GET", key)
			if err != nil || len(out) < len(payload) {
				t.Fatalf("GET via %s: %d bytes %v", a, len(out), err)
			}
			after := readCounters(t, id)
			checkGrowth(t, "tx during SET via "+a.String(), mid.TxBytes-before.TxBytes, mid.TxPackets-before.TxPackets, len(payload))
			checkGrowth(t, "rx during GET via "+a.String(), after.RxBytes-mid.RxBytes, after.RxPackets-mid.RxPackets, len(payload))
		}
	})

	t.Run("collector exports the counters", func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(netns.NewCollector(func() []string { return []string{id} }))
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		c := readCounters(t, id)
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() != id {
					t.Fatalf("series %s has labels %v", mf.GetName(), m.GetLabel())
				}
				got[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		if got["qsfs_volume_network_counters_up"] != 1 || got["qsfs_volume_network_transmit_bytes_total"] < float64(256<<10) ||
			got["qsfs_volume_network_transmit_bytes_total"] > float64(c.TxBytes) {
			t.Fatalf("collected %v, counters now %+v", got, c)
		}
	})

	t.Run("update backends keeps counting", func(t *testing.T) {
		before := readCounters(t, id)
		if err := netns.UpdateBackends(id, []netip.AddrPort{netip.AddrPortFrom(b2.Addr4, backendPort)}); err != nil {
			t.Fatal(err)
		}
		answers(t, "new backend", bin, ns.Name, b2.Addr4, backendPort)
		fails(t, "removed backend", bin, ns.Name, b1.Addr4, backendPort)
		after := readCounters(t, id)
		if after.TxBytes <= before.TxBytes || after.RxBytes <= before.RxBytes {
			t.Fatalf("counters after update %+v, before %+v: want them to keep growing", after, before)
		}
	})

	t.Run("setup again is idempotent", func(t *testing.T) {
		before := readCounters(t, id)
		again, err := netns.Setup(netns.Config{ID: id, Backends: backends, MetricsPort: metricsPort})
		if err != nil {
			t.Fatal(err)
		}
		if *again != *ns {
			t.Fatalf("second Setup %+v, first %+v", again, ns)
		}
		if after := readCounters(t, id); after.TxBytes < before.TxBytes {
			t.Fatalf("counters reset by Setup: %+v -> %+v", before, after)
		}
		answers(t, "backend after second Setup", bin, ns.Name, b1.Addr4, backendPort)
		answers(t, "metrics port after second Setup", bin, "", ns.NSAddr4, metricsPort)
	})
}

// checkGrowth asserts that a counter grew by at least the payload plus 40
// bytes (minimal IP + TCP headers) per packet, and not by much more.
func checkGrowth(t *testing.T, what string, bytes, packets uint64, payload int) {
	t.Helper()
	if packets == 0 {
		t.Fatalf("%s: no packets counted", what)
	}
	low := uint64(payload) + 40*packets
	high := uint64(payload) + 100*packets + 4096
	if bytes < low || bytes > high {
		t.Fatalf("%s: %d bytes in %d packets for a %d byte payload, want %d..%d", what, bytes, packets, payload, low, high)
	}
	t.Logf("%s: %d bytes in %d packets for a %d byte payload", what, bytes, packets, payload)
}

func readCounters(t *testing.T, id string) netns.Counters {
	t.Helper()
	c, err := netns.ReadCounters(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ifID is the id part of a volume's veth names (13 base-32 digits).
func ifID(id string) string {
	n, _ := strconv.ParseUint(id, 16, 64)
	s := strconv.FormatUint(n, 32)
	return strings.Repeat("0", 13-len(s)) + s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// teardownAndCheck tears volume id down and asserts that nothing of it is
// left: namespace, veth, rules tagged with it, and qsfs's host chains when
// no other qsfs volume exists.
func teardownAndCheck(t *testing.T, id string) {
	t.Helper()
	if err := netns.Teardown(id); err != nil {
		t.Errorf("Teardown: %v", err)
	}
	if err := netns.Teardown(id); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", netns.Name(id))); !os.IsNotExist(err) {
		t.Errorf("namespace file of %s left: %v", id, err)
	}
	if ids, _ := netns.List(); contains(ids, id) {
		t.Errorf("List still shows %s", id)
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if l.Attrs().Alias == id || strings.HasSuffix(l.Attrs().Name, ifID(id)) {
			t.Errorf("link %s left", l.Attrs().Name)
		}
	}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, c := range []struct{ table, chain string }{{"filter", netns.HostForwardChain}, {"nat", netns.HostNATChain}} {
			out, err := exec.Command(cmd, "-t", c.table, "-S").CombinedOutput()
			if err != nil {
				t.Errorf("%s -t %s -S: %v %s", cmd, c.table, err, out)
			}
			if strings.Contains(string(out), id) {
				t.Errorf("%s %s rules of %s left:\n%s", cmd, c.table, id, out)
			}
			// The chain may stay only while it holds another volume's rules
			// (other qsfs tests may run at the same time).
			if strings.Contains(string(out), "-N "+c.chain+"\n") && !strings.Contains(string(out), "-A "+c.chain+" ") {
				if others, _ := netns.List(); len(others) == 0 {
					t.Errorf("%s %s: empty chain %s left with no qsfs volume:\n%s", cmd, c.table, c.chain, out)
				}
			}
		}
	}
}

func TestAllocationCollision(t *testing.T) {
	nstest.RequireRoot(t)
	pid := os.Getpid()
	cfg := func(id string) netns.Config {
		return netns.Config{
			ID:      id,
			Subnet4: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 126, byte(pid), 0}), 28),
			Subnet6: netip.MustParsePrefix(fmt.Sprintf("fdd5:7e58:%x::/48", pid&0xffff)),
		}
	}
	// Ids 10 and 14 fall on the same of the pool's 4 slots.
	a, b := nstest.VolumeID(10), nstest.VolumeID(14)
	t.Cleanup(func() { teardownAndCheck(t, a); teardownAndCheck(t, b) })
	nsA, err := netns.Setup(cfg(a))
	if err != nil {
		t.Fatal(err)
	}
	nsB, err := netns.Setup(cfg(b))
	if err != nil {
		t.Fatal(err)
	}
	if nsA.NSAddr4 == nsB.NSAddr4 || nsA.NSAddr6 == nsB.NSAddr6 || nsA.HostAddr4 == nsB.HostAddr4 {
		t.Fatalf("colliding addresses: %+v and %+v", nsA, nsB)
	}
	for _, ns := range []*netns.Namespace{nsA, nsB} {
		if !cfg(a).Subnet4.Contains(ns.NSAddr4) || !cfg(a).Subnet6.Contains(ns.NSAddr6) {
			t.Fatalf("%+v outside the configured pools", ns)
		}
	}
	again, err := netns.Setup(cfg(a))
	if err != nil || *again != *nsA {
		t.Fatalf("Setup again = %+v %v, want %+v", again, err, nsA)
	}
	if found, err := netns.Lookup(b); err != nil || *found != *nsB {
		t.Fatalf("Lookup = %+v %v, want %+v", found, err, nsB)
	}
	// With no backends nothing is reachable, and the counters read zero.
	c, err := netns.ReadCounters(a)
	if err != nil || c != (netns.Counters{}) {
		t.Fatalf("ReadCounters = %+v %v", c, err)
	}
	if err := netns.Teardown(a); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.ReadCounters(a); err == nil {
		t.Fatal("ReadCounters of a torn down volume succeeded")
	}
	if _, err := netns.Lookup(a); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lookup of a torn down volume: %v", err)
	}
}

package netns

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNameAndIfNames(t *testing.T) {
	id := "0123456789abcdef"
	if got := Name(id); got != "qfs-ns-0123456789abcdef" {
		t.Fatalf("Name = %q", got)
	}
	if h, n := hostIfName(id), nsIfName(id); h != "qh028q5cu4qnjff" || n != "qn028q5cu4qnjff" || len(h) > 15 {
		t.Fatalf("veth names %q %q", h, n)
	}
	if a, b := hostIfName("ffffffffffffffff"), hostIfName("0000000000000000"); a != "qhfvvvvvvvvvvvv" || b != "qh0000000000000" {
		t.Fatalf("veth names %q %q", a, b)
	}
	for _, bad := range []string{"", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdefa", "../../etc/passwd"} {
		if ValidID(bad) == nil {
			t.Errorf("ValidID(%q) accepted", bad)
		}
	}
}

func TestPool(t *testing.T) {
	tests := []struct {
		name         string
		v4, v6       string
		slot         uint64
		h4, n4       string
		h6, n6       string
		slots        uint64
		wantErrMatch string
	}{
		{name: "defaults", slot: 0, h4: "100.127.0.1", n4: "100.127.0.2",
			h6: "fd8c:5f0e:9a3b::1", n6: "fd8c:5f0e:9a3b::2", slots: 1 << 14},
		{name: "defaults last", slot: 1<<14 - 1, h4: "100.127.255.253", n4: "100.127.255.254",
			h6: "fd8c:5f0e:9a3b:3fff::1", n6: "fd8c:5f0e:9a3b:3fff::2", slots: 1 << 14},
		{name: "small v4 limits", v4: "10.9.8.0/28", v6: "fd00:1::/48", slot: 3, h4: "10.9.8.13", n4: "10.9.8.14",
			h6: "fd00:1:0:3::1", n6: "fd00:1:0:3::2", slots: 4},
		{name: "long v6 uses /126", v4: "10.0.0.0/16", v6: "fd00:1::/120", slot: 2, h4: "10.0.0.9", n4: "10.0.0.10",
			h6: "fd00:1::9", n6: "fd00:1::a", slots: 64},
		{name: "v6 as v4", v4: "fd00::/64", wantErrMatch: "subnet4"},
		{name: "v4 too long", v4: "10.0.0.0/31", wantErrMatch: "subnet4"},
		{name: "v4 as v6", v6: "10.0.0.0/8", wantErrMatch: "subnet6"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v4, v6 netip.Prefix
			if tc.v4 != "" {
				v4 = netip.MustParsePrefix(tc.v4)
			}
			if tc.v6 != "" {
				v6 = netip.MustParsePrefix(tc.v6)
			}
			p, err := newPool(v4, v6)
			if tc.wantErrMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrMatch) {
					t.Fatalf("newPool error %v, want %q", err, tc.wantErrMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.slots != tc.slots {
				t.Fatalf("slots = %d, want %d", p.slots, tc.slots)
			}
			h4, n4, h6, n6 := p.addrs(tc.slot)
			got := []string{h4.String(), n4.String(), h6.String(), n6.String()}
			want := []string{tc.h4, tc.n4, tc.h6, tc.n6}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("addrs(%d) = %v, want %v", tc.slot, got, want)
				}
			}
			if s, ok := p.slotOf(n4); !ok || s != tc.slot {
				t.Fatalf("slotOf(%s) = %d %v", n4, s, ok)
			}
		})
	}
}

func TestPick(t *testing.T) {
	p, err := newPool(netip.MustParsePrefix("10.9.8.0/28"), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	// 0x...06 % 4 = 2.
	id := "0000000000000006"
	if s, _ := p.pick(id, nil); s != 2 {
		t.Fatalf("pick = %d, want 2", s)
	}
	if s, _ := p.pick(id, map[uint64]bool{2: true, 3: true}); s != 0 {
		t.Fatalf("pick with 2,3 used = %d, want 0 (wraps)", s)
	}
	if _, err := p.pick(id, map[uint64]bool{0: true, 1: true, 2: true, 3: true}); err == nil {
		t.Fatal("pick in a full pool succeeded")
	}
}

func TestRuleComment(t *testing.T) {
	for rule, want := range map[string]string{
		`-A QSFS-TX -m comment --comment "qsfs:0123456789abcdef tx" -c 5 300 -j ACCEPT`: "qsfs:0123456789abcdef tx",
		`-A FORWARD -m comment --comment qsfs -j QSFS-FWD`:                              "qsfs",
		`-A OUTPUT -o lo -j ACCEPT`:                                                     "",
	} {
		if got := ruleComment(rule); got != want {
			t.Errorf("ruleComment(%q) = %q, want %q", rule, got, want)
		}
	}
}

func TestNormalizeBackends(t *testing.T) {
	got, err := normalizeBackends([]netip.AddrPort{
		netip.MustParseAddrPort("[::ffff:10.0.0.1]:9900"),
		netip.MustParseAddrPort("10.0.0.1:9900"),
		netip.MustParseAddrPort("[fd00::1]:9900"),
	})
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.1:9900" || got[1].String() != "[fd00::1]:9900" {
		t.Fatalf("normalizeBackends = %v %v", got, err)
	}
	if _, err := normalizeBackends([]netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:1")}); err == nil {
		t.Fatal("unspecified backend accepted")
	}
}

func TestExecMainUsage(t *testing.T) {
	if code := ExecMain(nil); code != 2 {
		t.Fatalf("ExecMain() = %d, want 2", code)
	}
	if code := ExecMain([]string{"qfs-ns-0000000000000000", "--"}); code != 2 {
		t.Fatalf("ExecMain(ns --) = %d, want 2", code)
	}
	if code := ExecMain([]string{"/nonexistent/netns", "--", "true"}); code != 1 {
		t.Fatalf("ExecMain(missing ns) = %d, want 1", code)
	}
	cmd := Command("/bin/qsfs", "qfs-ns-x", "redis-cli", "PING")
	if strings.Join(cmd.Args, " ") != "/bin/qsfs nsexec qfs-ns-x -- redis-cli PING" {
		t.Fatalf("Command args %v", cmd.Args)
	}
}

func TestCollectorFake(t *testing.T) {
	counters := map[string]Counters{"00000000000000a1": {RxBytes: 1, TxBytes: 2, RxPackets: 3, TxPackets: 4}}
	read := func(id string) (Counters, error) {
		c, ok := counters[id]
		if !ok {
			return c, errors.New("no namespace")
		}
		return c, nil
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() []string { return []string{"00000000000000a1", "00000000000000b2"} },
		WithCounterReader(read), WithVolumeName(func(id string) string { return "vol-" + id[14:] })))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"qsfs_volume_network_receive_bytes_total name=vol-a1 volume=00000000000000a1":    1,
		"qsfs_volume_network_transmit_bytes_total name=vol-a1 volume=00000000000000a1":   2,
		"qsfs_volume_network_receive_packets_total name=vol-a1 volume=00000000000000a1":  3,
		"qsfs_volume_network_transmit_packets_total name=vol-a1 volume=00000000000000a1": 4,
		"qsfs_volume_network_counters_up name=vol-a1 volume=00000000000000a1":            1,
		"qsfs_volume_network_counters_up name=vol-b2 volume=00000000000000b2":            0,
	}
	if len(got) != len(want) {
		t.Fatalf("gathered %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s = %v, want %v (all %v)", k, got[k], v, got)
		}
	}
}

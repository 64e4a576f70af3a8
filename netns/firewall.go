package netns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Chains inside a volume's namespace (filter table, IPv4 and IPv6 alike).
// OUTPUT jumps to ChainOut, whose per-backend rules jump to ChainTx; INPUT
// jumps to ChainIn, whose per-backend rules jump to ChainRx. ChainTx and
// ChainRx hold one ACCEPT rule each, tagged "qsfs:<id> tx" and
// "qsfs:<id> rx": their counters are the volume's traffic with all its
// backends, and survive backend updates.
const (
	ChainIn  = "QSFS-IN"
	ChainOut = "QSFS-OUT"
	ChainRx  = "QSFS-RX"
	ChainTx  = "QSFS-TX"
)

type family struct {
	ipt      *iptables.IPTables
	v6       bool
	hostAddr netip.Addr
}

func families(ns *Namespace) ([]family, error) {
	v4, v6, err := tables()
	if err != nil {
		return nil, err
	}
	if v6 == nil {
		return []family{{v4, false, ns.HostAddr4}}, nil
	}
	return []family{{v4, false, ns.HostAddr4}, {v6, true, ns.HostAddr6}}, nil
}

// setupFirewall installs the firewall and counters inside ns.
func setupFirewall(ns *Namespace, backends []netip.AddrPort, metricsPort uint16) error {
	fams, err := families(ns)
	if err != nil {
		return err
	}
	return inNS(ns.Name, func() error {
		for _, f := range fams {
			if err := f.setup(ns, backends, metricsPort); err != nil {
				return err
			}
		}
		return nil
	})
}

func (f family) setup(ns *Namespace, backends []netip.AddrPort, metricsPort uint16) error {
	t := tag(ns.ID)
	for _, c := range []struct{ chain, total string }{{ChainIn, ""}, {ChainOut, ""}, {ChainRx, t + " rx"}, {ChainTx, t + " tx"}} {
		ok, err := f.ipt.ChainExists("filter", c.chain)
		if err != nil {
			return fmt.Errorf("look up chain %s: %w", c.chain, err)
		}
		if !ok {
			if err := f.ipt.NewChain("filter", c.chain); err != nil {
				return fmt.Errorf("create chain %s: %w", c.chain, err)
			}
		}
		if c.total != "" {
			if err := f.ipt.AppendUnique("filter", c.chain, "-m", "comment", "--comment", c.total, "-j", "ACCEPT"); err != nil {
				return fmt.Errorf("counter rule in %s: %w", c.chain, err)
			}
		}
	}
	if err := f.syncBackends(ns.ID, backends); err != nil {
		return err
	}
	for chain, rules := range f.baseRules(ns, metricsPort) {
		if err := f.replaceChain(chain, rules); err != nil {
			return err
		}
	}
	return nil
}

// baseRules returns the INPUT, OUTPUT and FORWARD rules. The first rule of
// INPUT and OUTPUT carries a comment describing the whole chain, so a repeat
// Setup with the same settings leaves the chain alone.
func (f family) baseRules(ns *Namespace, metricsPort uint16) map[string][][]string {
	t := tag(ns.ID)
	est := []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}
	in := [][]string{
		{"-i", "lo", "-m", "comment", "--comment", t + " input metrics=" + strconv.Itoa(int(metricsPort)), "-j", "ACCEPT"},
		{"-j", ChainIn},
		est,
	}
	out := [][]string{
		{"-o", "lo", "-m", "comment", "--comment", t + " output", "-j", "ACCEPT"},
		{"-j", ChainOut},
		est,
	}
	if f.v6 {
		in = append(in, []string{"-p", "ipv6-icmp", "-j", "ACCEPT"})
		for _, typ := range []string{"router-solicitation", "neighbour-solicitation", "neighbour-advertisement"} {
			out = append(out, []string{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", typ, "-j", "ACCEPT"})
		}
	}
	if metricsPort != 0 {
		in = append(in, []string{"-i", ns.NSIf, "-s", f.hostAddr.String(), "-p", "tcp", "-m", "tcp",
			"--dport", strconv.Itoa(int(metricsPort)), "-j", "ACCEPT"})
	}
	return map[string][][]string{"INPUT": in, "OUTPUT": out, "FORWARD": nil}
}

// replaceChain sets a built-in chain to policy DROP and the given rules,
// unless its first rule's comment and rule count show it is already so.
func (f family) replaceChain(chain string, rules [][]string) error {
	if err := f.ipt.ChangePolicy("filter", chain, "DROP"); err != nil {
		return fmt.Errorf("policy of %s: %w", chain, err)
	}
	cur, err := f.ipt.List("filter", chain)
	if err != nil {
		return fmt.Errorf("list %s: %w", chain, err)
	}
	// cur[0] is "-P chain DROP".
	if len(cur)-1 == len(rules) && (len(rules) == 0 || ruleComment(cur[1]) == specComment(rules[0])) {
		return nil
	}
	if err := f.ipt.ClearChain("filter", chain); err != nil {
		return fmt.Errorf("flush %s: %w", chain, err)
	}
	for _, r := range rules {
		if err := f.ipt.Append("filter", chain, r...); err != nil {
			return fmt.Errorf("rule %s %s: %w", chain, strings.Join(r, " "), err)
		}
	}
	return nil
}

func specComment(spec []string) string {
	for i, s := range spec {
		if s == "--comment" && i+1 < len(spec) {
			return spec[i+1]
		}
	}
	return ""
}

// backendRules returns the ChainOut and ChainIn rules of backend b.
func backendRules(id string, b netip.AddrPort) (out, in []string) {
	out = []string{"-d", b.Addr().String()}
	in = []string{"-s", b.Addr().String()}
	if b.Port() != 0 {
		p := strconv.Itoa(int(b.Port()))
		out = append(out, "-p", "tcp", "-m", "tcp", "--dport", p)
		in = append(in, "-p", "tcp", "-m", "tcp", "--sport", p)
	}
	in = append(in, "-m", "conntrack", "--ctstate", "ESTABLISHED")
	out = append(out, "-m", "comment", "--comment", tag(id)+" tx "+b.String(), "-j", ChainTx)
	in = append(in, "-m", "comment", "--comment", tag(id)+" rx "+b.String(), "-j", ChainRx)
	return out, in
}

// syncBackends makes ChainOut and ChainIn hold exactly the rules of the
// backends of this family, deleting stale ones and adding missing ones.
func (f family) syncBackends(id string, backends []netip.AddrPort) error {
	want := map[string]netip.AddrPort{}
	for _, b := range backends {
		if b.Addr().Is6() == f.v6 {
			want[b.String()] = b
		}
	}
	for _, c := range []struct{ chain, dir string }{{ChainOut, " tx "}, {ChainIn, " rx "}} {
		rules, err := f.ipt.List("filter", c.chain)
		if err != nil {
			return fmt.Errorf("list %s: %w", c.chain, err)
		}
		have := map[string]bool{}
		for n := len(rules) - 1; n >= 1; n-- {
			_, b, ok := strings.Cut(ruleComment(rules[n]), c.dir)
			if _, wanted := want[b]; ok && wanted && !have[b] {
				have[b] = true
				continue
			}
			if err := f.ipt.DeleteById("filter", c.chain, n); err != nil {
				return fmt.Errorf("delete rule %d of %s: %w", n, c.chain, err)
			}
		}
		for key, b := range want {
			if have[key] {
				continue
			}
			out, in := backendRules(id, b)
			spec := out
			if c.chain == ChainIn {
				spec = in
			}
			if err := f.ipt.Append("filter", c.chain, spec...); err != nil {
				return fmt.Errorf("backend %s rule in %s: %w", b, c.chain, err)
			}
		}
	}
	return nil
}

// UpdateBackends replaces the backends volume id may reach. The per-volume
// counters keep counting.
func UpdateBackends(id string, backends []netip.AddrPort) error {
	if err := ValidID(id); err != nil {
		return err
	}
	bs, err := normalizeBackends(backends)
	if err != nil {
		return err
	}
	fams, err := families(&Namespace{})
	if err != nil {
		return err
	}
	defer lockVolume(id)()
	err = inNS(Name(id), func() error {
		for _, f := range fams {
			if err := f.syncBackends(id, bs); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update backends of volume %s: %w", id, err)
	}
	return nil
}

// ReadCounters returns volume id's traffic with its backends, read from the
// tagged counter rules inside its namespace.
func ReadCounters(id string) (Counters, error) {
	var c Counters
	if err := ValidID(id); err != nil {
		return c, err
	}
	fams, err := families(&Namespace{})
	if err != nil {
		return c, err
	}
	err = inNS(Name(id), func() error {
		for _, f := range fams {
			for _, r := range []struct {
				chain, comment string
				pkts, bytes    *uint64
			}{
				{ChainTx, tag(id) + " tx", &c.TxPackets, &c.TxBytes},
				{ChainRx, tag(id) + " rx", &c.RxPackets, &c.RxBytes},
			} {
				p, b, err := f.counter(r.chain, r.comment)
				if err != nil {
					return err
				}
				*r.pkts += p
				*r.bytes += b
			}
		}
		return nil
	})
	if err != nil {
		return Counters{}, fmt.Errorf("read counters of volume %s: %w", id, err)
	}
	return c, nil
}

// counter returns packets and bytes of the rule of chain tagged comment.
func (f family) counter(chain, comment string) (uint64, uint64, error) {
	rules, err := f.ipt.ListWithCounters("filter", chain)
	if err != nil {
		return 0, 0, fmt.Errorf("list %s: %w", chain, err)
	}
	for _, r := range rules {
		if ruleComment(r) != comment {
			continue
		}
		// iptables -S -v prints "... -c <packets> <bytes> -j ACCEPT".
		_, rest, ok := strings.Cut(r, " -c ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 2 {
			return 0, 0, fmt.Errorf("no counters in rule %q", r)
		}
		p, err1 := strconv.ParseUint(fields[0], 10, 64)
		b, err2 := strconv.ParseUint(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("bad counters in rule %q", r)
		}
		return p, b, nil
	}
	return 0, 0, fmt.Errorf("no rule %q in %s", comment, chain)
}

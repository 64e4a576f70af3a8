package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// Host-side chains. FORWARD jumps to HostForwardChain, nat POSTROUTING to
// HostNATChain; both hold only rules tagged "qsfs:<id>".
const (
	HostForwardChain = "QSFS-FWD"
	HostNATChain     = "QSFS-POST"
	jumpComment      = "qsfs"
)

var (
	iptOnce    sync.Once
	ipt4, ipt6 *iptables.IPTables
	iptErr     error
)

// tables returns the iptables and ip6tables handles (ip6tables nil when
// the host has no IPv6). They only hold the program path and version, so they
// work in any namespace the calling thread is in.
func tables() (*iptables.IPTables, *iptables.IPTables, error) {
	iptOnce.Do(func() {
		ipt4, iptErr = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Timeout(30))
		if iptErr != nil {
			iptErr = fmt.Errorf("iptables: %w", iptErr)
			return
		}
		if !ipv6Enabled() {
			return // ipt6 stays nil
		}
		ipt6, iptErr = iptables.New(iptables.IPFamily(iptables.ProtocolIPv6), iptables.Timeout(30))
		if iptErr != nil {
			iptErr = fmt.Errorf("ip6tables: %w", iptErr)
		}
	})
	return ipt4, ipt6, iptErr
}

// rule is one iptables rule: table, chain and rule spec.
type rule struct {
	table, chain string
	spec         []string
}

// hostRules returns the host rules of ns for the family of nsAddr.
func hostRules(ns *Namespace, nsAddr netip.Addr) []rule {
	t := tag(ns.ID)
	return []rule{
		{"filter", HostForwardChain, []string{"-i", ns.HostIf, "-m", "comment", "--comment", t, "-j", "ACCEPT"}},
		{"filter", HostForwardChain, []string{"-o", ns.HostIf, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
			"-m", "comment", "--comment", t, "-j", "ACCEPT"}},
		{"nat", HostNATChain, []string{"-s", nsAddr.String(), "!", "-o", ns.HostIf,
			"-m", "comment", "--comment", t, "-j", "MASQUERADE"}},
	}
}

// setupHost enables forwarding and installs the host chains, their jumps and
// the volume's forward and masquerade rules for IPv4 and IPv6.
func setupHost(ns *Namespace) error {
	if err := enableForwarding(); err != nil {
		return err
	}
	v4, v6, err := tables()
	if err != nil {
		return err
	}
	for _, fam := range []struct {
		ipt  *iptables.IPTables
		addr netip.Addr
	}{{v4, ns.NSAddr4}, {v6, ns.NSAddr6}} {
		if fam.ipt == nil || !fam.addr.IsValid() {
			continue
		}
		if err := ensureChain(fam.ipt, "filter", HostForwardChain, "FORWARD"); err != nil {
			return err
		}
		if err := ensureChain(fam.ipt, "nat", HostNATChain, "POSTROUTING"); err != nil {
			return err
		}
		for _, r := range hostRules(ns, fam.addr) {
			if err := fam.ipt.AppendUnique(r.table, r.chain, r.spec...); err != nil {
				return fmt.Errorf("host rule %s %s %s: %w", r.table, r.chain, strings.Join(r.spec, " "), err)
			}
		}
	}
	return nil
}

// ensureChain creates chain in table and a jump to it at the top of parent.
func ensureChain(ipt *iptables.IPTables, table, chain, parent string) error {
	ok, err := ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("look up chain %s %s: %w", table, chain, err)
	}
	if !ok {
		if err := ipt.NewChain(table, chain); err != nil {
			return fmt.Errorf("create chain %s %s: %w", table, chain, err)
		}
	}
	jump := []string{"-m", "comment", "--comment", jumpComment, "-j", chain}
	if err := ipt.InsertUnique(table, parent, 1, jump...); err != nil {
		return fmt.Errorf("jump %s %s -> %s: %w", table, parent, chain, err)
	}
	return nil
}

// teardownHost deletes the host rules tagged with id, and each host chain
// (with its jump) once no rule is left in it.
func teardownHost(id string) error {
	v4, v6, err := tables()
	if err != nil {
		return err
	}
	var errs []error
	for _, ipt := range []*iptables.IPTables{v4, v6} {
		if ipt == nil {
			continue
		}
		errs = append(errs,
			deleteTagged(ipt, "filter", HostForwardChain, "FORWARD", tag(id)),
			deleteTagged(ipt, "nat", HostNATChain, "POSTROUTING", tag(id)))
	}
	return errors.Join(errs...)
}

// deleteTagged deletes the rules of chain whose comment is exactly comment,
// then the chain and its jump from parent when the chain is left empty.
func deleteTagged(ipt *iptables.IPTables, table, chain, parent, comment string) error {
	ok, err := ipt.ChainExists(table, chain)
	if err != nil {
		return fmt.Errorf("look up chain %s %s: %w", table, chain, err)
	}
	if !ok {
		return nil
	}
	rules, err := ipt.List(table, chain)
	if err != nil {
		return fmt.Errorf("list chain %s %s: %w", table, chain, err)
	}
	left := 0
	// rules[0] is "-N chain"; rule number n is rules[n]. Delete from the end
	// so the numbers of the remaining ones do not move.
	for n := len(rules) - 1; n >= 1; n-- {
		if ruleComment(rules[n]) != comment {
			left++
			continue
		}
		if err := ipt.DeleteById(table, chain, n); err != nil {
			return fmt.Errorf("delete rule %d of %s %s: %w", n, table, chain, err)
		}
	}
	if left > 0 {
		return nil
	}
	jump := []string{"-m", "comment", "--comment", jumpComment, "-j", chain}
	if err := ipt.DeleteIfExists(table, parent, jump...); err != nil {
		return fmt.Errorf("delete jump %s %s -> %s: %w", table, parent, chain, err)
	}
	if err := ipt.DeleteChain(table, chain); err != nil {
		return fmt.Errorf("delete chain %s %s: %w", table, chain, err)
	}
	return nil
}

// ruleComment returns the --comment of a rule as printed by iptables -S.
func ruleComment(rule string) string {
	_, rest, ok := strings.Cut(rule, "--comment ")
	if !ok {
		return ""
	}
	if strings.HasPrefix(rest, `"`) {
		end := strings.Index(rest[1:], `"`)
		if end < 0 {
			return rest[1:]
		}
		return rest[1 : end+1]
	}
	word, _, _ := strings.Cut(rest, " ")
	return word
}

package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// mu serialises, within this process, the host-wide part of Setup and
// Teardown: address allocation, veths and qsfs's host chains (lockFile does
// so between processes). The firewall inside a namespace is only guarded by
// the volume's own lock.
var mu sync.Mutex

// volumeLocks serialise Setup, UpdateBackends and Teardown per volume.
var volumeLocks sync.Map // id -> *sync.Mutex

func lockVolume(id string) func() {
	m, _ := volumeLocks.LoadOrStore(id, new(sync.Mutex))
	m.(*sync.Mutex).Lock()
	return m.(*sync.Mutex).Unlock
}

// Setup creates, or completes, the namespace of cfg.ID: the named namespace,
// the veth pair with its addresses and routes, the host-side forwarding and
// masquerading rules, and the firewall and counters inside the namespace.
// It is idempotent: calling it again on a complete namespace changes
// nothing but the backends and metrics port, and keeps the counters.
func Setup(cfg Config) (*Namespace, error) {
	if err := ValidID(cfg.ID); err != nil {
		return nil, err
	}
	backends, err := normalizeBackends(cfg.Backends)
	if err != nil {
		return nil, err
	}
	p, err := newPool(cfg.Subnet4, cfg.Subnet6)
	if err != nil {
		return nil, err
	}
	defer lockVolume(cfg.ID)()
	var ns *Namespace
	err = withLock(func() error {
		var err error
		if ns, err = setupLink(cfg.ID, p); err != nil {
			return err
		}
		return setupHost(ns)
	})
	if err == nil {
		err = setupFirewall(ns, backends, cfg.MetricsPort)
	}
	if err != nil {
		return nil, fmt.Errorf("set up netns of volume %s: %w", cfg.ID, err)
	}
	logrus.WithFields(logrus.Fields{"volume": cfg.ID, "ns": ns.Name, "addr4": ns.NSAddr4, "addr6": ns.NSAddr6}).
		Debug("netns ready")
	return ns, nil
}

// Teardown removes everything Setup made for id: the veth pair, the host
// rules tagged with id (and qsfs's host chains once no volume uses them)
// and the namespace itself. It returns no error when they are gone already.
// Processes still running inside the namespace keep it alive in the kernel
// until they exit; stopping them is the caller's job.
func Teardown(id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	defer lockVolume(id)()
	err := withLock(func() error {
		var errs []error
		link, err := netlink.LinkByName(hostIfName(id))
		if err == nil {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete veth %s: %w", hostIfName(id), err))
			}
		} else if !isNotFound(err) {
			errs = append(errs, fmt.Errorf("find veth %s: %w", hostIfName(id), err))
		}
		errs = append(errs, teardownHost(id))
		errs = append(errs, deleteNamed(Name(id)))
		return errors.Join(errs...)
	})
	if err != nil {
		return fmt.Errorf("tear down netns of volume %s: %w", id, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// normalizeBackends unmaps IPv4-in-IPv6 addresses, drops duplicates and
// rejects invalid or unspecified ones.
func normalizeBackends(in []netip.AddrPort) ([]netip.AddrPort, error) {
	seen := map[netip.AddrPort]bool{}
	var out []netip.AddrPort
	for _, b := range in {
		if !b.IsValid() || b.Addr().IsUnspecified() {
			return nil, fmt.Errorf("backend %q: want an IP address and port", b)
		}
		b = netip.AddrPortFrom(b.Addr().Unmap().WithZone(""), b.Port())
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out, nil
}

// setupLink makes the namespace and the veth pair and configures addresses
// and routes on both sides.
func setupLink(id string, p pool) (*Namespace, error) {
	ns := &Namespace{ID: id, Name: Name(id), HostIf: hostIfName(id), NSIf: nsIfName(id)}
	if err := createNamed(ns.Name); err != nil {
		return nil, err
	}
	nsh, err := openNS(ns.Name)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	in, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns.Name, err)
	}
	defer in.Close()

	slot, host, err := findOrAllocate(id, p, in, ns)
	if err != nil {
		return nil, err
	}
	ns.HostAddr4, ns.NSAddr4, ns.HostAddr6, ns.NSAddr6 = p.addrs(slot)

	if host == nil {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: ns.HostIf},
			PeerName:      ns.NSIf,
			PeerNamespace: netlink.NsFd(nsh),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("create veth %s: %w", ns.HostIf, err)
		}
		if host, err = netlink.LinkByName(ns.HostIf); err != nil {
			return nil, fmt.Errorf("find veth %s: %w", ns.HostIf, err)
		}
		if err := netlink.LinkSetAlias(host, id); err != nil {
			return nil, fmt.Errorf("set alias of %s: %w", ns.HostIf, err)
		}
	}
	peer, err := in.LinkByName(ns.NSIf)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", ns.NSIf, ns.Name, err)
	}
	lo, err := in.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo in %s: %w", ns.Name, err)
	}

	// Host side.
	if err := ensureAddr(netlink.AddrAdd, host, ns.HostAddr4, p.len4); err != nil {
		return nil, err
	}
	if !ipv6Enabled() {
		ns.HostAddr6, ns.NSAddr6 = netip.Addr{}, netip.Addr{}
	}
	if err := ensureAddr(netlink.AddrAdd, host, ns.HostAddr6, p.len6); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", ns.HostIf, err)
	}
	// Namespace side.
	if err := in.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("bring up lo in %s: %w", ns.Name, err)
	}
	if err := ensureAddr(in.AddrAdd, peer, ns.NSAddr4, p.len4); err != nil {
		return nil, err
	}
	if err := ensureAddr(in.AddrAdd, peer, ns.NSAddr6, p.len6); err != nil {
		return nil, err
	}
	if err := in.LinkSetUp(peer); err != nil {
		return nil, fmt.Errorf("bring up %s in %s: %w", ns.NSIf, ns.Name, err)
	}
	for _, gw := range []netip.Addr{ns.HostAddr4, ns.HostAddr6} {
		if !gw.IsValid() {
			continue
		}
		route := &netlink.Route{LinkIndex: peer.Attrs().Index, Gw: net.IP(gw.AsSlice())}
		if err := in.RouteReplace(route); err != nil {
			return nil, fmt.Errorf("default route via %s in %s: %w", gw, ns.Name, err)
		}
	}
	return ns, nil
}

// findOrAllocate returns the slot of an existing, complete veth pair of id
// (and its host link), or picks a free slot after removing a broken pair.
func findOrAllocate(id string, p pool, in *netlink.Handle, ns *Namespace) (uint64, netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return 0, nil, fmt.Errorf("list links: %w", err)
	}
	used := map[uint64]bool{}
	var own netlink.Link
	for _, l := range links {
		name := l.Attrs().Name
		if name == ns.HostIf {
			if a := l.Attrs().Alias; a != "" && a != id {
				return 0, nil, fmt.Errorf("veth %s belongs to volume %s", name, a)
			}
			own = l
			continue
		}
		if !strings.HasPrefix(name, HostIfPrefix) {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return 0, nil, fmt.Errorf("list addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				if i, ok := p.slotOf(ip.Unmap()); ok {
					used[i] = true
				}
			}
		}
	}
	if own != nil {
		_, perr := in.LinkByName(ns.NSIf)
		addrs, _ := netlink.AddrList(own, netlink.FAMILY_V4)
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP)
			if i, ok := p.slotOf(ip.Unmap()); ok && perr == nil && !used[i] {
				return i, own, nil
			}
		}
		// Half-made or from another pool: start over.
		if err := netlink.LinkDel(own); err != nil {
			return 0, nil, fmt.Errorf("delete stale veth %s: %w", ns.HostIf, err)
		}
	}
	slot, err := p.pick(id, used)
	return slot, nil, err
}

// ensureAddr adds a/bits to link unless present, without duplicate address
// detection so the address is usable at once.
func ensureAddr(add func(netlink.Link, *netlink.Addr) error, link netlink.Link, a netip.Addr, bits int) error {
	if !a.IsValid() {
		return nil // IPv6 disabled on the host
	}
	addr := &netlink.Addr{
		IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, a.BitLen())},
		Flags: unix.IFA_F_NODAD,
	}
	if err := add(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s to %s: %w", addr.IPNet, link.Attrs().Name, err)
	}
	return nil
}

// enableForwarding turns on IPv4 and IPv6 forwarding on the host. Interfaces
// that accept router advertisements (accept_ra = 1) are switched to 2 first,
// because turning on IPv6 forwarding would otherwise make them ignore RAs.
func enableForwarding() error {
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if !ipv6Enabled() {
		return nil
	}
	if v, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); err == nil && strings.TrimSpace(string(v)) == "1" {
		return nil
	}
	entries, err := os.ReadDir("/proc/sys/net/ipv6/conf")
	if err != nil {
		return fmt.Errorf("list ipv6 interfaces: %w", err)
	}
	for _, e := range entries {
		key := "net/ipv6/conf/" + e.Name() + "/accept_ra"
		if v, err := os.ReadFile("/proc/sys/" + key); err == nil && strings.TrimSpace(string(v)) == "1" {
			if err := writeSysctl(key, "2"); err != nil {
				return err
			}
		}
	}
	return writeSysctl("net/ipv6/conf/all/forwarding", "1")
}

func writeSysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// ipv6Enabled reports whether the host has IPv6 (not disabled at boot or by
// sysctl). Without it, namespaces get IPv4 only and ip6tables is not used.
func ipv6Enabled() bool {
	v, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
	return err == nil && strings.TrimSpace(string(v)) == "0"
}

// Lookup returns the namespace of volume id as Setup made it, read from the
// host side of its veth, without changing anything. The error matches
// os.ErrNotExist when the namespace or its veth is missing.
func Lookup(id string) (*Namespace, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	ns := &Namespace{ID: id, Name: Name(id), HostIf: hostIfName(id), NSIf: nsIfName(id)}
	if !isNSFile(nsPath(ns.Name)) {
		return nil, fmt.Errorf("look up netns of volume %s: %w", id, os.ErrNotExist)
	}
	link, err := netlink.LinkByName(ns.HostIf)
	if isNotFound(err) {
		return nil, fmt.Errorf("look up veth %s of volume %s: %w", ns.HostIf, id, os.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("look up veth %s of volume %s: %w", ns.HostIf, id, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", ns.HostIf, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !ns.HostAddr4.IsValid():
			ns.HostAddr4, ns.NSAddr4 = ip, ip.Next()
		case ip.Is6() && !ip.IsLinkLocalUnicast() && !ns.HostAddr6.IsValid():
			ns.HostAddr6, ns.NSAddr6 = ip, ip.Next()
		}
	}
	if !ns.HostAddr4.IsValid() {
		return nil, fmt.Errorf("veth %s of volume %s has no IPv4 address", ns.HostIf, id)
	}
	return ns, nil
}

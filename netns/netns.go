// Package netns owns qsfs's per-volume network namespaces: creation and
// removal of `qfs-ns-<id>` (a file under /run/netns, so `ip netns` sees it),
// the veth pair joining it to the host with addresses from a settable pool,
// the host-side forwarding and masquerading rules in qsfs's own chains, the
// firewall inside the namespace, the per-volume tagged iptables counters and
// their Prometheus collector, and running programs inside a namespace
// (`qsfs nsexec`).
//
// It does not own the processes that run inside a namespace (the plugin
// starts and stops them), nor any volume state: everything it creates can be
// recomputed from the volume id, and Setup and Teardown are idempotent.
//
// Layout for a volume id (16 lowercase hex chars) with the default pools:
//
//	namespace  qfs-ns-<id>
//	veth       qh<id32> (host) <-> qn<id32> (namespace), id32 = the id's
//	           64 bits in 13 base-32 digits, so names never collide; the
//	           host side's alias is the id
//	IPv4       a /30 of 100.127.0.0/16: host .1, namespace .2
//	IPv6       a /64 of fd8c:5f0e:9a3b::/48: host ::1, namespace ::2
//
// docs/isolation.md describes the firewall rules and counters.
package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Prefixes of the names this package creates.
const (
	// NamePrefix starts the name of every qsfs network namespace.
	NamePrefix = "qfs-ns-"
	// HostIfPrefix starts the host side of every qsfs veth pair.
	HostIfPrefix = "qh"
	// NSIfPrefix starts the namespace side of every qsfs veth pair.
	NSIfPrefix = "qn"
)

// Default address pools for the veth pairs. 100.127.0.0/16 is the range ZOS
// uses for the same purpose (RFC 6598 shared space, not used by home or
// office LANs); the IPv6 pool is a fixed ULA /48.
var (
	DefaultSubnet4 = netip.MustParsePrefix("100.127.0.0/16")
	DefaultSubnet6 = netip.MustParsePrefix("fd8c:5f0e:9a3b::/48")
)

// runDir is where named network namespaces live (iproute2's NETNS_RUN_DIR).
const runDir = "/run/netns"

// Name returns the network namespace name of volume id: "qfs-ns-<id>".
func Name(id string) string { return NamePrefix + id }

// Config describes one volume's namespace.
type Config struct {
	ID          string           // volume id, 16 lowercase hex chars
	Backends    []netip.AddrPort // data + metadata backends the volume may reach (out rules + counters)
	MetricsPort uint16           // TCP port inside the ns reachable from the host side only (0 = none)
	Subnet4     netip.Prefix     // address pool for veth pairs (zero value = DefaultSubnet4)
	Subnet6     netip.Prefix     // (zero value = DefaultSubnet6)
}

// Namespace is what Setup made for a volume.
type Namespace struct {
	ID, Name, HostIf, NSIf string
	HostAddr4, NSAddr4     netip.Addr
	HostAddr6, NSAddr6     netip.Addr
}

// Counters is a volume's traffic with its backends, IP and TCP headers
// included, summed over IPv4 and IPv6. Tx is what the namespace sent to the
// backends (uploads), Rx what it received from them.
type Counters struct{ RxBytes, TxBytes, RxPackets, TxPackets uint64 }

// ValidID reports whether id is a volume id: 16 lowercase hex chars.
func ValidID(id string) error {
	if len(id) != 16 {
		return fmt.Errorf("volume id %q: want 16 lowercase hex characters", id)
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("volume id %q: want 16 lowercase hex characters", id)
		}
	}
	return nil
}

func hostIfName(id string) string { return HostIfPrefix + ifID(id) }
func nsIfName(id string) string   { return NSIfPrefix + ifID(id) }

// ifID writes a valid id's 64 bits as 13 base-32 digits (2+13 = 15 chars,
// the kernel's limit for interface names).
func ifID(id string) string {
	n, _ := strconv.ParseUint(id, 16, 64)
	s := strconv.FormatUint(n, 32)
	return strings.Repeat("0", 13-len(s)) + s
}

// tag is the iptables comment that marks every rule of volume id.
func tag(id string) string { return "qsfs:" + id }

// List returns the ids of the existing qsfs network namespaces.
func List() ([]string, error) {
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", runDir, err)
	}
	var ids []string
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), NamePrefix)
		if ok && ValidID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// nsPath returns the file of a namespace given as a name under /run/netns or
// as a path.
func nsPath(ns string) string {
	if strings.ContainsRune(ns, '/') {
		return ns
	}
	return filepath.Join(runDir, ns)
}

package driver

import (
	"fmt"
	"net/netip"
	"os/exec"

	"github.com/qsfs/qsfs/netns"
)

// Isolation gives a volume's stack its network: a namespace per volume
// (NetnsIsolation) or the plugin's own network (NoIsolation, for hosts
// without network namespaces).
type Isolation interface {
	// Setup makes (or completes) the network of volume id, allowed to reach
	// backends; metricsPort is reachable from the host side.
	Setup(id string, backends []string, metricsPort uint16) (*Network, error)
	// Update replaces the backends the volume may reach.
	Update(id string, backends []string) error
	// Teardown removes what Setup made; no error if it is gone.
	Teardown(id string) error
	// Command runs prog inside the network of n.
	Command(n *Network, prog string, args ...string) *exec.Cmd
	// Counters reads the volume's traffic with its backends.
	Counters(id string) (netns.Counters, error)
	// Enabled reports whether volumes get their own namespace.
	Enabled() bool
}

// Network is a volume's network as the stack sees it.
type Network struct {
	Name string     // namespace name; "" without isolation
	Addr netip.Addr // address of the namespace seen from the host (metrics scrape)
}

// NetnsIsolation puts every volume in its own namespace (package netns).
type NetnsIsolation struct {
	Self             string // the qsfs binary (for `qsfs nsexec`)
	Subnet4, Subnet6 netip.Prefix
}

var _ Isolation = (*NetnsIsolation)(nil)

func addrPorts(backends []string) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(backends))
	for _, b := range backends {
		ap, err := netip.ParseAddrPort(b)
		if err != nil {
			return nil, fmt.Errorf("backend %q: %w", b, err)
		}
		out = append(out, ap)
	}
	return out, nil
}

// Setup implements Isolation.
func (n *NetnsIsolation) Setup(id string, backends []string, metricsPort uint16) (*Network, error) {
	aps, err := addrPorts(backends)
	if err != nil {
		return nil, err
	}
	ns, err := netns.Setup(netns.Config{ID: id, Backends: aps, MetricsPort: metricsPort, Subnet4: n.Subnet4, Subnet6: n.Subnet6})
	if err != nil {
		return nil, err
	}
	addr := ns.NSAddr4
	if !addr.IsValid() {
		addr = ns.NSAddr6
	}
	return &Network{Name: ns.Name, Addr: addr}, nil
}

// Update implements Isolation.
func (n *NetnsIsolation) Update(id string, backends []string) error {
	aps, err := addrPorts(backends)
	if err != nil {
		return err
	}
	return netns.UpdateBackends(id, aps)
}

// Teardown implements Isolation.
func (n *NetnsIsolation) Teardown(id string) error { return netns.Teardown(id) }

// Command implements Isolation.
func (n *NetnsIsolation) Command(nw *Network, prog string, args ...string) *exec.Cmd {
	return netns.Command(n.Self, nw.Name, prog, args...)
}

// Counters implements Isolation.
func (n *NetnsIsolation) Counters(id string) (netns.Counters, error) { return netns.ReadCounters(id) }

// Enabled implements Isolation.
func (n *NetnsIsolation) Enabled() bool { return true }

// NoIsolation runs every stack in the plugin's network, for hosts without
// network namespaces. There are no per-volume counters.
type NoIsolation struct{}

var _ Isolation = NoIsolation{}

// Setup implements Isolation.
func (NoIsolation) Setup(string, []string, uint16) (*Network, error) {
	return &Network{Addr: netip.MustParseAddr("127.0.0.1")}, nil
}

// Update implements Isolation.
func (NoIsolation) Update(string, []string) error { return nil }

// Teardown implements Isolation.
func (NoIsolation) Teardown(string) error { return nil }

// Command implements Isolation.
func (NoIsolation) Command(_ *Network, prog string, args ...string) *exec.Cmd {
	return exec.Command(prog, args...)
}

// Counters implements Isolation.
func (NoIsolation) Counters(id string) (netns.Counters, error) {
	return netns.Counters{}, fmt.Errorf("volume %s: no counters without network isolation", id)
}

// Enabled implements Isolation.
func (NoIsolation) Enabled() bool { return false }

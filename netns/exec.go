// Package netns owns qsfs's per-volume network namespaces: creation and
// removal of `qfs-ns-<id>`, the veth link to the host, the firewall inside
// the namespace, the per-volume tagged iptables counters, and running
// programs inside a namespace (`qsfs nsexec`).
package netns

import (
	"fmt"
	"os"
)

// ExecMain runs `qsfs nsexec <netns> -- <program> [args...]`: it enters the
// named network namespace and execs program there.
func ExecMain(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs nsexec: not built yet")
	return 1
}

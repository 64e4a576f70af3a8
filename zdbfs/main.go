// Package zdbfs is qsfs's 0-db-fs 0.1.11 compatible FUSE filesystem (`qsfs zdbfs`).
package zdbfs

import (
	"fmt"
	"os"
)

// Main runs `qsfs zdbfs` with args and returns the exit status.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs zdbfs: not built yet")
	return 1
}

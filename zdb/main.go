// Package zdb is qsfs's 0-db 2.0.x compatible server (`qsfs zdb`).
package zdb

import (
	"fmt"
	"os"
)

// Main runs `qsfs zdb` with args and returns the exit status.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs zdb: not built yet")
	return 1
}

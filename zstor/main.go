// Package zstor is qsfs's 0-stor v2 compatible archiver (`qsfs zstor`) and
// the zdb hook that drives it (`qsfs hook`).
package zstor

import (
	"fmt"
	"os"
)

// Main runs `qsfs zstor` with args and returns the exit status.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs zstor: not built yet")
	return 1
}

// HookMain runs `qsfs hook` with args and returns the exit status.
func HookMain(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs hook: not built yet")
	return 1
}

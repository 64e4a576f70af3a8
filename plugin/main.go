// Package plugin is the process entry of the qsfs volume plugin: settings,
// logging and the VolumeDriver socket.
package plugin

import (
	"fmt"
	"os"
)

// Main runs `qsfs plugin` with args and returns the exit status.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs plugin: not built yet")
	return 1
}

// VolumeMain runs `qsfs volume` with args and returns the exit status.
func VolumeMain(args []string) int {
	fmt.Fprintln(os.Stderr, "qsfs volume: not built yet")
	return 1
}

// Command qsfs is the one static binary of the qsfs volume plugin. It only
// dispatches to subcommands; each component owns its own flags:
//
//	qsfs [plugin] [flags]        the Docker/Podman VolumeDriver (default)
//	qsfs volume update|status    talk to a running plugin over its socket
//	qsfs zdb [flags]             0-db 2.0.x compatible server
//	qsfs zdbfs [-o opts] <mnt>   0-db-fs 0.1.11 compatible FUSE filesystem
//	qsfs zstor [flags] <cmd>     0-stor v2 compatible archiver
//	qsfs hook <event> <id> ...   zdb hook that drives zstor
//	qsfs nsexec <ns> -- prog ... run prog inside a network namespace
//
// The subcommand may also be chosen by the name the binary is invoked as (a
// symlink named zdb, zdbfs, zstor or hook), as the official programs are.
package main

import (
	"os"
	"path/filepath"

	"github.com/qsfs/qsfs/netns"
	"github.com/qsfs/qsfs/plugin"
	"github.com/qsfs/qsfs/zdb"
	"github.com/qsfs/qsfs/zdbfs"
	"github.com/qsfs/qsfs/zstor"
)

var commands = map[string]func(args []string) int{
	"plugin": plugin.Main,
	"volume": plugin.VolumeMain,
	"zdb":    zdb.Main,
	"zdbfs":  zdbfs.Main,
	"zstor":  zstor.Main,
	"hook":   zstor.HookMain,
	"nsexec": netns.ExecMain,
}

func main() {
	if cmd, ok := commands[filepath.Base(os.Args[0])]; ok {
		os.Exit(cmd(os.Args[1:]))
	}
	if len(os.Args) > 1 {
		if cmd, ok := commands[os.Args[1]]; ok {
			os.Exit(cmd(os.Args[2:]))
		}
	}
	os.Exit(plugin.Main(os.Args[1:]))
}

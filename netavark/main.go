// Command moor-netavark is a netavark external plugin: podman 5 and later (netavark 1.6
// and later) run moor's drivers through it. Install it (or a link to it named
// moor-bridge or moor-macvlan) in a directory of containers.conf's netavark_plugin_dirs;
// see docs/runtimes.md and package netavark/plugin.
package main

import (
	"os"
	"runtime"

	"github.com/moornet/moor/netavark/plugin"
)

func init() { runtime.LockOSThread() }

func main() { os.Exit(plugin.Run()) }

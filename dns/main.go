// Command moor-dns is two things in one binary: the chained CNI plugin that registers a
// container's names on its network (placed after moor-bridge, moor-macvlan or
// moor-overlay in a conflist), and, as `moor-dns serve`, the DNS sidecar that answers them
// (one per host network namespace, serving every network on its gateway addresses).
package main

import (
	"os"
	"runtime"

	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(serveMain(os.Args[2:]))
	}
	plugins.Main(plugin)
}

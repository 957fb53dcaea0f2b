// Command moor-none is Docker's `--network none` as a CNI plugin: loopback only. It also
// serves as the `loopback` plugin runtimes call for every pod (install.sh can install it
// under that name).
package main

import (
	"runtime"

	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(plugin) }

// Command moor-host is Docker's `--network host` as a CNI plugin, and, with "device", a
// way to hand one host link to a container (the reference host-device's job).
package main

import (
	"runtime"

	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(plugin) }

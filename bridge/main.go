// Command moor-bridge is Docker's bridge driver as a CNI plugin: a Linux bridge with a
// gateway, a veth per container, masquerade, isolation between networks, internal
// networks and published ports, with every field of the reference bridge plugin.
package main

import (
	"runtime"

	_ "github.com/moornet/moor/ipam/inproc" // moor-ipam in process: no second exec per ADD
	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(plugin) }

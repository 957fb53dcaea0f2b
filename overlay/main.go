// Command moor-overlay is a multi-host VXLAN overlay as a CNI plugin, and, as
// `moor-overlay agent`, the daemon that keeps each host's routes, neighbour and FDB entries
// for every other host in step with the leases in etcd (package agent).
//
// The plugin (ADD, DEL, CHECK, GC, STATUS; design notes in plugin.go) claims the host's
// subnet of the network's range from etcd (package lease), prepares the host's VXLAN
// device, bridge and masquerade (packages hostnet, vxlan, masq), gives each container a
// veth on the bridge and an address of the host's subnet from moor-ipam in process, and,
// when no agent runs on the host, syncs every other host's entries once.
//
// What it does not do: IPv6 overlays or an IPv6 underlay, encryption, multicast or
// broadcast across hosts (routed L3 only: each host subnet is its own broadcast domain),
// network policy, or published ports.
package main

import (
	"os"
	"runtime"

	_ "github.com/moornet/moor/ipam/allocator/etcdstore" // overlay networks keep addresses in etcd

	_ "github.com/moornet/moor/ipam/inproc" // moor-ipam in process: no second exec per ADD
	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(agentMain(os.Args[2:]))
	}
	plugins.Main(plugin)
}

// Command moor-ipam is moor's IPAM plugin: every field of the reference host-local and
// static plugins, an embedded store by default (bbolt) or etcd for addresses unique across
// hosts, and a GC that gives a rebooted host its pool back. Drivers whose config names
// ipam.type "moor-ipam" run the same code in their own process (package inproc).
package main

import (
	"runtime"

	_ "github.com/moornet/moor/ipam/allocator/etcdstore" // moor-ipam serves every store type

	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(plugin) }

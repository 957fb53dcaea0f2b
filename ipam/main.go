// Command moor-ipam is moor's IPAM plugin: every field of the reference host-local and
// static plugins, an embedded store by default (bbolt) or etcd for addresses unique across
// hosts, and a GC that gives a rebooted host its pool back. Drivers whose config names
// ipam.type "moor-ipam" run the same code in their own process (package inproc).
//
// This binary links the local store only; etcd-backed configs are exec'd to
// moor-ipam-etcd (cmd/moor-ipam-etcd), whose etcd client costs milliseconds of start-up.
package main

import (
	"runtime"

	"github.com/moornet/moor/ipam/inproc"
	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(inproc.Plugin) }

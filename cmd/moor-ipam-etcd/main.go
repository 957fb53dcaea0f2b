// Command moor-ipam-etcd is moor-ipam with the etcd store linked in. moor-ipam and the
// moor drivers exec it for networks whose ipam.store.type is "etcd"; it is not a type a
// config names itself.
package main

import (
	"runtime"

	_ "github.com/moornet/moor/ipam/allocator/etcdstore" // the etcd store
	"github.com/moornet/moor/ipam/inproc"
	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(inproc.Plugin) }

package main

import (
	"runtime"

	_ "github.com/moornet/moor/ipam/inproc" // moor-ipam in process: no second exec per ADD
	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(plugin) }

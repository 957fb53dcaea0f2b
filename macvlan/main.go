package main

import (
	"runtime"

	"github.com/moornet/moor/plugins"
)

func init() { runtime.LockOSThread() }

func main() { plugins.Main(plugin) }

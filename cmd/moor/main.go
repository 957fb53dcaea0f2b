// Command moor is the CLI of the moor CNI suite: Docker's view of a runtime's moor
// networks (network ls/inspect/create/rm/prune/connect/disconnect) and `moor doctor`.
// The commands live in package cli; see docs/cli.md.
package main

import (
	"os"
	"runtime"

	"github.com/moornet/moor/cmd/moor/internal/cli"
)

// Keep main on the thread-group leader: namespace work runs on locked helper threads
// (ns.Do), never on this one.
func init() { runtime.LockOSThread() }

//go:generate go run . gendocs ../../docs/cli.md

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Package integration builds the moor binaries and drives them as runtimes do: through
// libcni, with a result cache, in network namespaces the tests create. One netns plays the
// host: libcni's calls run inside it (the exec'd plugin inherits the calling thread's
// namespace), so nothing touches the machine's own interfaces.
package integration

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/moornet/moor/plugins/plugintest"
)

// binDir holds the freshly built binaries for the whole package.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// Every test here needs root (network namespaces, links, firewall rules). As another user
// no test runs, and go test says so: the run filter is set to match nothing, so the
// package's line reads "ok ... [no tests to run]" rather than a plain "ok", and the reason
// is printed (shown with -v).
func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		flag.Parse()
		if err := flag.Set("test.run", "^$"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "integration: every test needs root (network namespaces, links, firewall rules): none run")
		return m.Run()
	}
	// No firewall repair from the DNS sidecars these tests start: tests here plant drift
	// on purpose (CHECK, doctor) and a repair would undo it. The repair tests turn it on.
	os.Setenv("MOOR_FIREWALL_REPAIR", "off")
	// The plugins keep per-namespace state under MOOR_RUN_DIR (default /run/moor): a test
	// that does not choose its own would leave a directory per host namespace it made in
	// the machine's /run/moor/netns. One temporary run dir for the package, removed at the
	// end, keeps the machine as it was; tests that need their own still set it.
	if os.Getenv("MOOR_RUN_DIR") == "" {
		run, err := os.MkdirTemp("", "moor-itest-run-")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer os.RemoveAll(run)
		os.Setenv("MOOR_RUN_DIR", run)
	}
	dir, cleanup, err := plugintest.BuildBinaries("..", "itest")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer cleanup()
	binDir = dir
	return m.Run()
}

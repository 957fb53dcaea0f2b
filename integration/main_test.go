// Package integration builds the moor binaries and drives them as runtimes do: through
// libcni, with a result cache, in network namespaces the tests create. One netns plays the
// host: libcni's calls run inside it (the exec'd plugin inherits the calling thread's
// namespace), so nothing touches the machine's own interfaces.
package integration

import (
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

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("integration tests need root; skipping")
		return 0
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

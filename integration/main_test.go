// Package integration builds the moor binaries and drives them as runtimes do: through
// libcni, with a result cache, in network namespaces the tests create. One netns plays the
// host: libcni's calls run inside it (the exec'd plugin inherits the calling thread's
// namespace), so nothing touches the machine's own interfaces.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
	dir, err := os.MkdirTemp("", "moor-itest-bin-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("bash", filepath.Join("..", "scripts", "build.sh"), "itest")
	build.Env = append(os.Environ(), "BIN_DIR="+dir)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("building the binaries:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

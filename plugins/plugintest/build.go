package plugintest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// BinDirEnv names a directory of already built binaries that BuildBinaries returns
// instead of building (e.g. after `make build`: MOOR_TEST_BIN_DIR=$PWD/bin).
const BinDirEnv = "MOOR_TEST_BIN_DIR"

// BuildBinaries builds every moor binary with scripts/build.sh into a new temporary
// directory; repoRoot is the repository root relative to the calling test's package.
// cleanup removes the directory.
func BuildBinaries(repoRoot, version string) (dir string, cleanup func(), err error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir, func() {}, nil
	}
	dir, err = os.MkdirTemp("", "moor-test-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	build := exec.Command("bash", filepath.Join(repoRoot, "scripts", "build.sh"), version)
	build.Env = append(os.Environ(), "BIN_DIR="+dir)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("building the binaries: %w", err)
	}
	return dir, cleanup, nil
}

// Ping sends one ICMP echo from netns to ip (busybox ping, run inside the netns).
func Ping(netns ns.NetNS, ip string) error {
	return netns.Do(func(ns.NetNS) error {
		out, err := exec.Command("busybox", "ping", "-c", "1", "-W", "2", ip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %s: %v: %s", ip, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
}

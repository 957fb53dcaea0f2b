package runtimes

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Local images of the tests, built on this machine (no registry).
const (
	busyboxImage = "localhost/moor-busybox:test"
	pauseImage   = "localhost/moor-pause:test"
	// indexBody is what `busybox httpd -h /www` serves in the busybox image.
	indexBody = "served by moor's runtime test\n"
	// busyboxPath is Debian's busybox-static.
	busyboxPath = "/bin/busybox"
	// hostLockWait bounds the wait for another package that tests in the host netns.
	hostLockWait = 10 * time.Minute
)

// suite is what TestMain builds once for every scenario.
var suite struct {
	binDir     string // moor's binaries and `loopback`, installed by scripts/install.sh
	rootfsTar  string // the busybox image's root filesystem, for `podman import`
	busyboxOCI string // the busybox image as an OCI archive, for `ctr images import`
	pauseOCI   string // the sandbox image, for containerd's CRI
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Only the tests that need no runtime and no binaries run (needSuite skips the rest).
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "moor-rtest-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	unlock, err := LockHost(hostLockWait, os.Stdout)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer unlock()
	guard := guardHostPaths()
	defer guard.restore(os.Stderr)
	if err := prepare(dir); err != nil {
		fmt.Println("preparing the runtime tests:", err)
		return 1
	}
	code := m.Run()
	if err := stopContainerd(); err != nil {
		fmt.Println("stopping containerd:", err)
		code = 1
	}
	return code
}

// prepare builds and installs moor's binaries (scripts/install.sh --loopback, as a node
// would get them), the pause binary, and the images.
func prepare(dir string) error {
	build := filepath.Join(dir, "build")
	suite.binDir = filepath.Join(dir, "cni-bin")
	if err := runQuiet(exec.Command("bash", filepath.Join("..", "..", "scripts", "build.sh"), "rtest"), "BIN_DIR="+build); err != nil {
		return err
	}
	install := exec.Command("bash", filepath.Join("..", "..", "scripts", "install.sh"), "--from", build, "--bin-dir", suite.binDir, "--loopback")
	if err := runQuiet(install); err != nil {
		return err
	}
	pause := filepath.Join(dir, "pause")
	if err := runQuiet(exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", pause, "./pause"), "CGO_ENABLED=0"); err != nil {
		return err
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		return fmt.Errorf("%s (Debian's busybox-static; scripts/runtime-deps.sh installs it): %w", busyboxPath, err)
	}
	bbRoot := filepath.Join(dir, "busybox-rootfs")
	if err := BusyboxRootfs(bbRoot, busyboxPath, indexBody); err != nil {
		return err
	}
	var layer bytes.Buffer
	if err := TarDir(bbRoot, &layer); err != nil {
		return err
	}
	suite.rootfsTar = filepath.Join(dir, "busybox-rootfs.tar")
	if err := os.WriteFile(suite.rootfsTar, layer.Bytes(), fileMode); err != nil {
		return err
	}
	suite.busyboxOCI = filepath.Join(dir, "busybox.oci.tar")
	if err := WriteOCIArchive(suite.busyboxOCI, Image{Name: busyboxImage, Layer: layer.Bytes(), Cmd: []string{"sh"}}); err != nil {
		return err
	}
	pauseRoot := filepath.Join(dir, "pause-rootfs")
	if err := PauseRootfs(pauseRoot, pause); err != nil {
		return err
	}
	layer.Reset()
	if err := TarDir(pauseRoot, &layer); err != nil {
		return err
	}
	suite.pauseOCI = filepath.Join(dir, "pause.oci.tar")
	return WriteOCIArchive(suite.pauseOCI, Image{Name: pauseImage, Layer: layer.Bytes(), Entrypoint: []string{"/pause"}})
}

// needSuite skips a test that needs what TestMain prepares as root.
func needSuite(t *testing.T) {
	t.Helper()
	if suite.binDir == "" {
		t.Skip("needs root (the runtimes, network namespaces and the host's firewall)")
	}
}

// runQuiet runs cmd with extra environment and returns its output in the error.
func runQuiet(cmd *exec.Cmd, env ...string) error {
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", cmd, err, out)
	}
	return nil
}

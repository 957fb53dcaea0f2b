package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// install.sh installs every binary and example, and never overwrites a file that is not
// moor's.
func TestInstallScript(t *testing.T) {
	target, confDir, cliDir := t.TempDir(), t.TempDir(), t.TempDir()
	foreign := filepath.Join(target, "moor-host")
	if err := os.WriteFile(foreign, []byte("#!/bin/sh\necho not moor\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "install.sh"), "--from", binDir, "--bin-dir", target, "--cli-dir", cliDir, "--conf-dir", confDir, "--examples", "--loopback")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	for _, name := range []string{"moor-none", "moor-bridge", "moor-ipam", "moor-dns", "loopback"} {
		if _, err := os.Stat(filepath.Join(target, name)); err != nil {
			t.Errorf("%s not installed: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cliDir, "moor")); err != nil {
		t.Errorf("the CLI is not in --cli-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(target, "moor")); err == nil {
		t.Error("the CLI was put in the CNI bin dir")
	}
	// A second install replaces moor's own files, the CLI included.
	out, err = exec.Command("bash", filepath.Join("..", "scripts", "install.sh"), "--from", binDir, "--bin-dir", target, "--cli-dir", cliDir).CombinedOutput()
	if err != nil || strings.Count(string(out), "left alone") != 1 {
		t.Errorf("reinstall must leave only the foreign moor-host alone: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(foreign); string(data) != "#!/bin/sh\necho not moor\n" {
		t.Error("install.sh overwrote a moor-host that is not moor's")
	}
	lists, err := libcni.ConfFiles(confDir, []string{".conflist"})
	if err != nil || len(lists) == 0 {
		t.Fatalf("no example conflists installed: %v", err)
	}
	for _, f := range lists {
		if _, err := libcni.ConfListFromFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

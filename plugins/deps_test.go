package plugins_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPluginDependencies guards what the everyday plugin binaries link. Each exec of a
// plugin maps its whole binary and, with the kernel's fault-around (64 KB around every
// touched page), faults in nearly all of its code and tables: a package linked is memory
// and start-up time on every ADD, used or not. These were removed on purpose:
//   - crypto/... (Go's FIPS 140 module comes with crypto/sha256 and crypto/rand): names
//     are hashed with plugins/namehash, random bytes come from plugins/sysrand;
//   - math/big: address counts are ipam/store.Count;
//   - regexp (compiled at start-up by libcni's pkg/utils, among others): names are
//     checked by plugins.SpecName/SpecIfName, and the iptables backend runs iptables
//     through plugins/firewall/iptexec (go-iptables parsed versions with it).
func TestPluginDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	forbidden := []string{"crypto", "math/big", "regexp"}
	allowed := map[string]map[string]bool{ // binary dir -> importers allowed to pull a forbidden package
		"bridge":  {},
		"macvlan": {},
		"ipam":    {},
		"none":    {},
		"host":    {},
	}
	for dir, ok := range allowed {
		out, err := exec.Command(goBin, "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../"+dir).Output()
		if err != nil {
			t.Fatalf("go list ../%s: %v", dir, err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			importer := f[0]
			if isForbidden(importer, forbidden) {
				continue // reported at its importer
			}
			for _, imp := range f[1:] {
				if isForbidden(imp, forbidden) && !ok[importer] {
					t.Errorf("moor-%s links %s (imported by %s)", dir, imp, importer)
				}
			}
		}
	}
}

func isForbidden(pkg string, forbidden []string) bool {
	for _, f := range forbidden {
		if pkg == f || strings.HasPrefix(pkg, f+"/") {
			return true
		}
	}
	return false
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/plugintest"
)

// encryptedConflist is an overlay network asking for WireGuard (its store is never
// reached: the doctor's kernel finding does not need it).
const encryptedConflist = `{"cniVersion": "1.1.0", "name": "sealed", "plugins": [{"type": "moor-overlay",
  "subnet": "10.236.0.0/16", "encryption": "wireguard", "store": {"endpoints": ["http://127.0.0.1:1"]}}]}`

// On a kernel without WireGuard the doctor says so, says why (the module is missing from
// the kernel's module tree, or present but unusable) and which networks need it: only
// information while no network is encrypted, a problem (exit 3) naming the encrypted
// network once one exists.
func TestDoctorWireGuardMissing(t *testing.T) {
	plugintest.RequireKernelWithout(t, plugintest.KernelWireGuard)
	w := newWorld(t)
	out := w.ok("doctor")
	for _, want := range []string{"wireguard links cannot be created", "module wireguard", `"encryption": "wireguard"`} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if err := os.MkdirAll(w.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.confDir, "sealed.conflist"), []byte(encryptedConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := w.moor("doctor")
	if code != 3 || !strings.Contains(out, "encrypted here: sealed") || !strings.Contains(out, "modprobe wireguard") {
		t.Fatalf("doctor with an encrypted network on a kernel without WireGuard: exit %d, want 3 and the network named:\n%s", code, out)
	}
}

// On a kernel with WireGuard (the VM lane) the probe creates a wireguard link and says
// the module is there, and an encrypted network is no kernel problem.
func TestDoctorWireGuardPresent(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	w := newWorld(t)
	out := w.ok("doctor")
	if !strings.Contains(out, "wireguard links can be created (module wireguard") || !strings.Contains(out, `"encryption": "wireguard"`) {
		t.Fatalf("doctor output lacks the WireGuard probe's success:\n%s", out)
	}
	if strings.Contains(out, "wireguard links cannot") {
		t.Fatalf("doctor reports WireGuard missing on a kernel that has it:\n%s", out)
	}
}

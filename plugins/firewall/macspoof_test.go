package firewall

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"
)

// A re-ADD replaces the attachment's rule (one rule per attachment), DEL removes only its
// own, CHECK names a missing one, and a second DEL succeeds: on the kernel's ruleset.
func TestMacSpoofLifecycle(t *testing.T) {
	requireRoot(t)
	opts := Options{NetNS: newNS(t), LockFile: filepath.Join(t.TempDir(), "fw.lock")}
	m := func(id string, last byte) MacSpoof {
		return MacSpoof{Network: "n1", ContainerID: id, IfName: "eth0", HostIf: "veth" + id, MAC: net.HardwareAddr{2, 0, 0, 0, 0, last}}
	}
	keys := func() []string {
		t.Helper()
		ks, err := MacSpoofAttachments(opts, "n1")
		must(t, "MacSpoofAttachments", err)
		var out []string
		for _, k := range ks {
			out = append(out, k.ContainerID)
		}
		slices.Sort(out)
		return out
	}
	for _, ms := range []MacSpoof{m("c1", 1), m("c2", 2), m("c1", 3)} {
		must(t, "AddMacSpoof "+ms.ContainerID, AddMacSpoof(opts, ms))
	}
	if got := keys(); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Fatalf("rules of %v after a re-ADD, want one each of c1 and c2", got)
	}
	must(t, "DelMacSpoof c1", DelMacSpoof(opts, "n1", "c1", "eth0"))
	if got := keys(); !slices.Equal(got, []string{"c2"}) {
		t.Fatalf("rules of %v after DEL of c1, want c2's", got)
	}
	var missing *MissingRulesError
	if err := CheckMacSpoof(opts, "n1", "c1", "eth0"); !errors.As(err, &missing) {
		t.Errorf("CHECK of the deleted attachment: %v, want MissingRulesError", err)
	}
	must(t, "CheckMacSpoof c2", CheckMacSpoof(opts, "n1", "c2", "eth0"))
	must(t, "second DelMacSpoof c1", DelMacSpoof(opts, "n1", "c1", "eth0"))
}

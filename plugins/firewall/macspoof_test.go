package firewall

import (
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
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

// TestRepairMacSpoof: a container whose frames do not carry the MAC its spoof check
// records is cut off from its neighbour; after `nft flush ruleset` (once, then ten times in
// a row) the Repairer puts the check back from the State and the frames are dropped again,
// with one rule left; after DEL a flush brings nothing back and the container talks again.
func TestRepairMacSpoof(t *testing.T) {
	requireRoot(t)
	l := newLab(t, KindNFTables)
	n := l.addNetwork("rms", nil)
	c1, c2 := l.addContainer(n, "s1"), l.addContainer(n, "s2")
	serveWhoami(t, c2.ns, whoamiPort)
	to := hostPort(c2.ip4, whoamiPort)
	expectSeenAs(t, "before the spoof check", c1.ns, "tcp", to, c1.ip4)
	opts := l.fw.(interface{ options() Options }).options()
	// The check records another MAC than the one c1 sends with: c1 is the spoofer.
	m := MacSpoof{Network: n.Name, ContainerID: "ctr-s1", IfName: ctrLink, HostIf: c1.hostVeth, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}}
	must(t, "AddMacSpoof", AddMacSpoof(opts, m))
	expectBlocked(t, "spoofed frames", c1.ns, to)
	r := startRepairer(t, l, l.host)

	back := func(when string) {
		t.Helper()
		start := time.Now()
		var err error
		for end := start.Add(repairDeadline); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if err = CheckMacSpoof(opts, n.Name, m.ContainerID, m.IfName); err == nil {
				t.Logf("%s: spoof check back after %s", when, time.Since(start).Round(time.Millisecond))
				return
			}
		}
		t.Fatalf("%s: spoof check not back within %s: %v (repairer: %+v)", when, repairDeadline, err, r.Stats())
	}
	l.inHost("nft", "flush", "ruleset")
	back("after a flush")
	expectBlocked(t, "spoofed frames after a flush", c1.ns, to)
	if st := r.Stats(); !strings.Contains(st.LastWhat, "macspoof "+n.Name+"/ctr-s1/") {
		t.Fatalf("repair of the spoof check not reported: %+v", st)
	}
	for range 10 {
		_ = l.host.Do(func(ns.NetNS) error { return exec.Command("nft", "flush", "ruleset").Run() })
	}
	back("after ten flushes")
	if got := strings.Count(l.inHost("nft", "list", "table", "bridge", macSpoofTable), "drop"); got != 1 {
		t.Fatalf("%d spoof check rules after ten flushes, want 1", got)
	}
	expectBlocked(t, "spoofed frames after ten flushes", c1.ns, to)

	must(t, "DelMacSpoof", DelMacSpoof(opts, n.Name, m.ContainerID, m.IfName))
	l.inHost("nft", "flush", "ruleset")
	checks := r.Stats().Checks
	for end := time.Now().Add(10 * time.Second); r.Stats().Checks < checks+2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the Repairer made no two checks within 10s")
		}
	}
	if keys, err := MacSpoofAttachments(opts, n.Name); err != nil || len(keys) != 0 {
		t.Fatalf("after DEL and a flush: spoof rules of %v (%v), want none", keys, err)
	}
	expectSeenAs(t, "after DEL", c1.ns, "tcp", to, c1.ip4)
}

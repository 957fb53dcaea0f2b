package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestOverlayLab20Hosts: twenty hosts with one container each converge: every host holds
// exactly nineteen routes, neighbours and FDB entries, and the first and last containers
// reach each other.
func TestOverlayLab20Hosts(t *testing.T) {
	var b strings.Builder
	b.WriteString("underlay: 172.31.9.0/24\nagent: {resync: 5s}\nnetworks:\n  - {name: ov, subnet: 10.242.0.0/16, vni: 42}\nhosts:\n")
	var hosts []string
	for i := 1; i <= 20; i++ {
		name := fmt.Sprintf("h%02d", i)
		hosts = append(hosts, name)
		fmt.Fprintf(&b, "  - {name: %s, containers: [c%02d]}\n", name, i)
	}
	l := upLab(t, b.String())
	ls := waitConverged(t, l, hosts...)
	if len(ls) != 20 {
		t.Fatalf("%d leases, want 20", len(ls))
	}
	h, _ := l.Host("h07")
	k, err := readKernel(h.Netns)
	if err != nil || len(k.Routes) != 19 || len(k.Neighs) != 19 || len(k.FDB) != 19 {
		t.Fatalf("h07 holds %d routes, %d neighbours, %d FDB entries (%v), want 19 of each", len(k.Routes), len(k.Neighs), len(k.FDB), err)
	}
	mustReach(t, l, "c01", "c20", false)
	mustReach(t, l, "c20", "c01", false)
	mustReach(t, l, "c11", "c03", false)
}

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestOverlayLab20Hosts: twenty hosts with one container each converge: every host holds
// exactly nineteen routes, neighbours and FDB entries, and the first and last containers
// reach each other.
//
// Twenty hosts' agents, DNS sidecars and plugins all talk to the lab's etcd at once while
// CI runs other test packages beside this one: on a loaded 2-core machine an etcd request
// can take longer than the lab's default 3 s client timeout (one run failed with "registering
// network ov: context deadline exceeded"), so this lab gets the start budget (and with it
// the 30 s / 10 s client timeouts) of a slow machine. What it checks does not depend on the
// timeouts.
func TestOverlayLab20Hosts(t *testing.T) {
	var b strings.Builder
	b.WriteString("underlay: 172.31.9.0/24\nagent: {resync: 5s}\nnetworks:\n  - {name: ov, subnet: 10.242.0.0/16, vni: 42}\nhosts:\n")
	var hosts []string
	for i := 1; i <= 20; i++ {
		name := fmt.Sprintf("h%02d", i)
		hosts = append(hosts, name)
		fmt.Fprintf(&b, "  - {name: %s, containers: [c%02d]}\n", name, i)
	}
	l := upLabBudget(t, b.String(), 3*time.Minute)
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

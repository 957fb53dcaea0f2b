package integration

import (
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/firewall"
)

// The drivers reserve addresses in a goroutine beside their link work (ipamclient.Pending).
// These tests fail an ADD while the reservation may still be under way, and check that
// the error is the one a reserve-first ADD reports and that nothing is left.

// dummyIn puts a down dummy link named name into netns: an interface in the way.
func dummyIn(t *testing.T, netns ns.NetNS, name string) {
	t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
	})
	if err != nil {
		t.Fatalf("dummy %s: %v", name, err)
	}
}

// wantOnlyDummy fails unless the container's eth0 is still the dummy the test put there.
func wantOnlyDummy(t *testing.T, ctr ns.NetNS) {
	t.Helper()
	if l := linkIn(t, ctr, "eth0"); l == nil || l.Type() != "dummy" {
		t.Errorf("the container's eth0 is %v, want the test's dummy", l)
	}
}

func TestBridgeFailureBeforeTheIPAMJoin(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	wantBack := func(t *testing.T, before []string, rules, network string, held int) {
		t.Helper()
		if after := w.hostLinks(); !equalStrings(after, before) {
			t.Errorf("host links changed: %v -> %v", before, after)
		}
		if after := w.ruleset(); after != rules {
			t.Errorf("rules changed:\n%s\n---\n%s", rules, after)
		}
		if r := w.reservations(network); len(r) != held {
			t.Errorf("reservations %v, want %d", r, held)
		}
	}
	t.Run("veth creation fails", func(t *testing.T) {
		list := w.network("ovclash", "mbro0", "10.214.0.0/24", nil)
		before, rules := w.hostLinks(), w.ruleset()
		ctr := plugintestNetns(t)
		dummyIn(t, ctr, "eth0")
		_, err := w.rt.add(list, attachment(ctr, "eth0"))
		wantCode(t, err, 105, "eth0")
		wantBack(t, before, rules, "ovclash", 0) // the bridge this ADD created is gone too
		wantOnlyDummy(t, ctr)
	})
	tiny := w.network("ovtiny", "mbro1", "10.214.1.0/30", nil) // one address: .2
	_, live, liveRes := w.attach(tiny)
	t.Run("IPAM fails while the veth is made", func(t *testing.T) {
		before, rules := w.hostLinks(), w.ruleset()
		ctr := plugintestNetns(t)
		_, err := w.rt.add(tiny, attachment(ctr, "eth0"))
		wantCode(t, err, 100, "10.214.1.0/30")
		wantBack(t, before, rules, "ovtiny", 1)
		if l := linkIn(t, ctr, "eth0"); l != nil {
			t.Errorf("eth0 left in the container: %v", l)
		}
	})
	t.Run("both fail: the IPAM error", func(t *testing.T) {
		before, rules := w.hostLinks(), w.ruleset()
		ctr := plugintestNetns(t)
		dummyIn(t, ctr, "eth0")
		_, err := w.rt.add(tiny, attachment(ctr, "eth0"))
		wantCode(t, err, 100, "10.214.1.0/30")
		wantBack(t, before, rules, "ovtiny", 1)
		wantOnlyDummy(t, ctr)
	})
	t.Run("a duplicate ADD leaves the live attachment its addresses", func(t *testing.T) {
		before, rules := w.hostLinks(), w.ruleset()
		_, err := w.rt.add(tiny, live)
		wantCode(t, err, 105, "eth0")
		wantBack(t, before, rules, "ovtiny", 1)
		if err := ping(w.host, ipOf(liveRes)); err != nil {
			t.Errorf("the live container lost its address: %v", err)
		}
		// The next container still finds the pool exhausted: the address stayed held.
		_, err = w.rt.add(tiny, attachment(plugintestNetns(t), "eth0"))
		wantCode(t, err, 100, "10.214.1.0/30")
	})
}

func TestMacvlanFailureBeforeTheIPAMJoin(t *testing.T) {
	w := newMvWorld(t)
	conf := w.mvConf(60, nil)
	conf["ipam"].(map[string]any)["rangeEnd"] = "10.230.0.60" // one address
	tiny := conflist(t, "1.1.0", "mvtiny", conf)
	_, live, liveRes := w.mvAttach(tiny)
	t.Run("IPAM fails while the macvlan is made", func(t *testing.T) {
		snap := w.snapshot()
		ctr := plugintestNetns(t)
		_, err := w.rt.add(tiny, attachment(ctr, "eth0"))
		wantCode(t, err, 100, "10.230.0.60")
		if r := w.reservations("mvtiny"); len(r) != 1 {
			t.Errorf("reservations %v, want the live one", r)
		}
		if now := w.snapshot(); !equalStrings(now.links, snap.links) || !equalStrings(now.routes, snap.routes) {
			t.Errorf("host changed: %v -> %v", snap, now)
		}
		if l := linkIn(t, ctr, "eth0"); l != nil {
			t.Errorf("eth0 left in the container: %v", l)
		}
	})
	t.Run("a duplicate ADD leaves the live attachment its addresses", func(t *testing.T) {
		_, err := w.rt.add(tiny, live)
		wantCode(t, err, 105, "eth0")
		if r := w.reservations("mvtiny"); len(r) != 1 {
			t.Errorf("reservations %v, want the live one", r)
		}
		if err := ping(w.lan, ipOf(liveRes)); err != nil {
			t.Errorf("the live container lost its address: %v", err)
		}
		_, err = w.rt.add(tiny, attachment(plugintestNetns(t), "eth0"))
		wantCode(t, err, 100, "10.230.0.60")
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

package integration

import (
	"net"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins/firewall"
)

// moor-bridge reserves addresses in a goroutine beside its link work (ipamclient.Pending).
// These tests fail an ADD while the reservation may still be under way, and check that
// the error is the one a reserve-first ADD reports and that nothing is left; and that a
// duplicate ADD's rollback (bridge and macvlan) leaves the live attachment its addresses.

// inTheWay puts a veth pair eth0/eth0p into netns (this kernel has no dummy links): an
// interface in the way of the container's eth0.
func inTheWay(t *testing.T, netns ns.NetNS) {
	t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0p"})
	})
	if err != nil {
		t.Fatalf("veth eth0 in %s: %v", netns.Path(), err)
	}
}

// wantStillInTheWay fails unless the container's eth0 is still the test's (its peer eth0p
// beside it).
func wantStillInTheWay(t *testing.T, ctr ns.NetNS) {
	t.Helper()
	if l, p := linkIn(t, ctr, "eth0"), linkIn(t, ctr, "eth0p"); l == nil || p == nil || l.Attrs().ParentIndex != p.Attrs().Index {
		t.Errorf("the container's eth0 is %v (eth0p %v), want the test's pair", l, p)
	}
}

func TestBridgeFailureBeforeTheIPAMJoin(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	wantBack := func(t *testing.T, before []string, rules, network string, held int) {
		t.Helper()
		if after := w.hostLinks(); !slices.Equal(after, before) {
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
		inTheWay(t, ctr)
		_, err := w.rt.add(list, attachment(ctr, "eth0"))
		wantCode(t, err, 105, "eth0")
		wantBack(t, before, rules, "ovclash", 0) // the bridge this ADD created is gone too
		wantStillInTheWay(t, ctr)
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
		inTheWay(t, ctr)
		_, err := w.rt.add(tiny, attachment(ctr, "eth0"))
		wantCode(t, err, 100, "10.214.1.0/30")
		wantBack(t, before, rules, "ovtiny", 1)
		wantStillInTheWay(t, ctr)
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

func TestMacvlanIPAMFailureAndDuplicateAdd(t *testing.T) {
	w := newMvWorld(t)
	conf := w.mvConf(60, nil)
	conf["ipam"].(map[string]any)["rangeEnd"] = "10.230.0.60" // one address
	tiny := conflist(t, "1.1.0", "mvtiny", conf)
	_, live, liveRes := w.mvAttach(tiny)
	// onlyLive: a failed ADD left the live reservation alone and the host's links and
	// routes as in snap.
	onlyLive := func(t *testing.T, snap snapshot) {
		t.Helper()
		if r := w.reservations("mvtiny"); len(r) != 1 {
			t.Errorf("reservations %v, want the live one", r)
		}
		if now := w.snapshot(); !slices.Equal(now.links, snap.links) || !slices.Equal(now.routes, snap.routes) {
			t.Errorf("host changed: %v -> %v", snap, now)
		}
	}
	t.Run("IPAM fails while the macvlan is made", func(t *testing.T) {
		snap := w.snapshot()
		ctr := plugintestNetns(t)
		_, err := w.rt.add(tiny, attachment(ctr, "eth0"))
		wantCode(t, err, 100, "10.230.0.60")
		onlyLive(t, snap)
		if l := linkIn(t, ctr, "eth0"); l != nil {
			t.Errorf("eth0 left in the container: %v", l)
		}
	})
	// moor-ipam reserves before the macvlan is made (its commit runs beside the link
	// work); when both fail, the link's error is reported, macvlan's order as before
	// (link, then IPAM), and nothing is left.
	t.Run("both fail: the link's error", func(t *testing.T) {
		snap := w.snapshot()
		ctr := plugintestNetns(t)
		inTheWay(t, ctr)
		_, err := w.rt.add(tiny, attachment(ctr, "eth0"))
		wantCode(t, err, 105, "eth0")
		onlyLive(t, snap)
		wantStillInTheWay(t, ctr)
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

// An ADD killed between creating the veth pair and naming its host end (the reservation
// beside it can end the process there) leaves a host end without altname: DEL finds it
// through the container's interface and the attachment's MAC on the host end. It deletes
// no other veth: one without that MAC, or another attachment's.
func TestBridgeDelFindsAnUnnamedPair(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	list := w.network("ovorphan", "mbro2", "10.214.2.0/24", nil)
	named, _, namedRes := w.attach(list)
	pair := func(ctr ns.NetNS, host string, mac net.HardwareAddr) {
		t.Helper()
		err := w.host.Do(func(ns.NetNS) error {
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, HardwareAddr: mac}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ctr.Fd()))})
		})
		if err != nil {
			t.Fatalf("veth %s: %v", host, err)
		}
	}
	hostHas := func(name string) bool { return slices.Contains(w.hostLinks(), name) }

	orphan := plugintestNetns(t)
	rt := attachment(orphan, "eth0")
	pair(orphan, "ovorph0", veth.HostMAC(veth.Bridge.AltName("ovorphan", rt.ContainerID, "eth0")))
	if err := w.rt.del(list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if hostHas("ovorph0") || linkIn(t, orphan, "eth0") != nil {
		t.Error("DEL left the unnamed pair")
	}

	other := plugintestNetns(t)
	pair(other, "ovorph1", bridge.RandomMAC())
	if err := w.rt.del(list, attachment(other, "eth0")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if !hostHas("ovorph1") || linkIn(t, other, "eth0") == nil {
		t.Error("DEL deleted a veth without the attachment's MAC")
	}

	// Another attachment's container (a DEL with another container ID): its veth stays.
	if err := w.rt.del(list, attachment(named, "eth0")); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if linkIn(t, named, "eth0") == nil {
		t.Fatal("DEL deleted another attachment's veth")
	}
	if err := ping(w.host, ipOf(namedRes)); err != nil {
		t.Errorf("the attached container lost connectivity: %v", err)
	}
}

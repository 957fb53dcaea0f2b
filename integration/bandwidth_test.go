package integration

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// Shaping rates: low enough to be stable on a loaded 2-core machine, and different per
// direction so that a swapped direction shows.
const (
	bwIngress = 10_000_000
	bwEgress  = 20_000_000
	bwBurst   = 512_000 // 64 KiB: several full-size packets, a fraction of a second at the rates
	iperfSecs = 3
)

// bwCaps declares the bandwidth capability besides the world's portMappings.
var bwCaps = map[string]any{"capabilities": map[string]any{"portMappings": true, "bandwidth": true}}

func bandwidth(in, out uint64) map[string]any {
	b := map[string]any{}
	if in != 0 {
		b["ingressRate"], b["ingressBurst"] = in, bwBurst
	}
	if out != 0 {
		b["egressRate"], b["egressBurst"] = out, bwBurst
	}
	return map[string]any{"bandwidth": b}
}

// throughput measures from client to server at addr, once more if the first measurement
// misses ok (the machine is shared: a busy moment can disturb one run).
func throughput(t *testing.T, server, client ns.NetNS, addr string, ok func(float64) bool) (float64, bool) {
	t.Helper()
	var bps float64
	for try := 0; try < 2; try++ {
		var err error
		if bps, err = plugintest.Iperf(server, client, addr, iperfSecs); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %.1f Mbit/s", addr, bps/1e6)
		if ok(bps) {
			return bps, true
		}
	}
	return bps, false
}

func within(rate float64) func(float64) bool {
	return func(bps float64) bool { return bps >= 0.8*rate && bps <= 1.2*rate }
}

func above(rate float64) func(float64) bool {
	return func(bps float64) bool { return bps > 2*rate }
}

// wantShaped checks both directions of a container: shaped ones within ±20 % of their
// rate, an unshaped one clearly above the other direction's rate.
func wantShaped(t *testing.T, ctr ns.NetNS, ctrIP string, peer ns.NetNS, peerIP string, in, out float64) {
	t.Helper()
	check := func(dir string, server, client ns.NetNS, addr string, rate, other float64) {
		if rate != 0 {
			if bps, ok := throughput(t, server, client, addr, within(rate)); !ok {
				t.Errorf("%s: %.1f Mbit/s, want %.1f ±20 %%", dir, bps/1e6, rate/1e6)
			}
			return
		}
		if bps, ok := throughput(t, server, client, addr, above(other)); !ok {
			t.Errorf("%s (unshaped): %.1f Mbit/s, want clearly above %.1f", dir, bps/1e6, other/1e6)
		}
	}
	check("ingress", ctr, peer, ctrIP, in, out)
	check("egress", peer, ctr, peerIP, out, in)
}

// ifbsIn lists the ifb devices of a netns.
func ifbsIn(t *testing.T, netns ns.NetNS) []string {
	t.Helper()
	var names []string
	err := netns.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			if l.Type() == "ifb" {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// qdiscsOf lists the non-default qdisc kinds of a link found by name or altname.
func qdiscsOf(t *testing.T, netns ns.NetNS, name string) []string {
	t.Helper()
	var kinds []string
	_ = netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return nil
		}
		qs, _ := netlink.QdiscList(l)
		for _, q := range qs {
			if k := q.Type(); k == "tbf" || k == "ingress" {
				kinds = append(kinds, k)
			}
		}
		return nil
	})
	return kinds
}

// bwAttach attaches a new container through r with capability arguments caps.
func bwAttach(t *testing.T, r *runtime, list *libcni.NetworkConfigList, caps map[string]any) (ns.NetNS, *libcni.RuntimeConf, string) {
	t.Helper()
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	rt.CapabilityArgs = caps
	res, err := r.add(list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	return ctr, rt, ipOf(res)
}

// Shaping is the same tc on either firewall backend: one backend is enough.
func TestBandwidthBridgeTraffic(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	list := w.network("bwnet", "mbw0", "10.214.0.0/24", bwCaps)
	peer, _, peerIP := bwAttach(t, w.rt, list, nil)
	inOnly, rtIn, inIP := bwAttach(t, w.rt, list, bandwidth(bwIngress, 0))
	outOnly, rtOut, outIP := bwAttach(t, w.rt, list, bandwidth(0, bwEgress))
	if n := len(ifbsIn(t, w.host)); n != 1 {
		t.Errorf("%d ifbs in the host, want 1 (only egress shaping needs one)", n)
	}
	if q := qdiscsOf(t, w.host, veth.Bridge.AltName("bwnet", rtIn.ContainerID, "eth0")); strings.Join(q, ",") != "tbf" {
		t.Errorf("qdiscs on the ingress-shaped host veth: %v, want tbf", q)
	}

	wantShaped(t, inOnly, inIP, peer, peerIP, bwIngress, 0)
	wantShaped(t, outOnly, outIP, peer, peerIP, 0, bwEgress)

	for _, rt := range []*libcni.RuntimeConf{rtIn, rtOut} {
		if err := w.rt.check(list, rt); err != nil {
			t.Errorf("CHECK of fresh shaping: %v", err)
		}
	}
	// A deleted qdisc and a deleted ifb are mismatches that name them.
	hostVeth := veth.Bridge.AltName("bwnet", rtIn.ContainerID, rtIn.IfName)
	if err := w.host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(hostVeth)
		if err != nil {
			return err
		}
		return netlink.QdiscDel(&netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}})
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, w.rt.check(list, rtIn), codes.CheckFailed, "tbf qdisc")
	ifb := shaping.IfbFor("bwnet", rtOut.ContainerID, "eth0")
	if err := w.host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifb.AltName)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, w.rt.check(list, rtOut), codes.CheckFailed, "ifb "+ifb.Name)

	// Recreate the out-only attachment's ifb through a new ADD, then DEL everything.
	_, rtOut2, _ := bwAttach(t, w.rt, list, bandwidth(bwIngress, bwEgress))
	for _, rt := range []*libcni.RuntimeConf{rtIn, rtOut, rtOut2} {
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	if ifbs := ifbsIn(t, w.host); len(ifbs) != 0 {
		t.Errorf("ifbs left after DEL: %v", ifbs)
	}
}

func TestBandwidthBridgeFaultRollsBack(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	list := w.network("bwfault", "mbw1", "10.214.1.0/24", bwCaps)
	// The bridge outlives its attachments (DEL keeps it): make it before the baseline.
	_, rt0, _ := bwAttach(t, w.rt, list, nil)
	if err := w.rt.del(list, rt0); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"", ":kill"} {
		before := w.hostLinks()
		ctr := plugintestNetns(t)
		rt := attachment(ctr, "eth0")
		rt.CapabilityArgs = bandwidth(bwIngress, bwEgress)
		t.Setenv("MOOR_TEST_FAULT", "bridge/after-shaping"+mode)
		if _, err := w.rt.add(list, rt); err == nil {
			t.Fatal("ADD with bridge/after-shaping armed succeeded")
		}
		t.Setenv("MOOR_TEST_FAULT", "")
		if mode == ":kill" {
			// Nothing rolled back: the runtime's DEL cleans up.
			if err := w.rt.del(list, rt); err != nil {
				t.Fatalf("DEL after the kill: %v", err)
			}
		}
		if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("fault%s: links changed: %v -> %v", mode, before, after)
		}
		if r := w.reservations("bwfault"); len(r) != 0 {
			t.Errorf("fault%s: addresses left: %v", mode, r)
		}
	}
}

func TestBandwidthBadValuesAreCode7(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	list := w.network("bwbad", "mbw2", "10.214.2.0/24", bwCaps)
	for _, c := range []struct {
		name  string
		bw    map[string]any
		field string
	}{
		{"rate without burst", map[string]any{"ingressRate": bwIngress}, "ingressBurst"},
		{"burst without rate", map[string]any{"egressBurst": bwBurst}, "egressBurst"},
		{"burst under one packet", map[string]any{"egressRate": bwEgress, "egressBurst": 8000}, "egressBurst"},
		{"rate under a byte", map[string]any{"ingressRate": 4, "ingressBurst": bwBurst}, "ingressRate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := w.hostLinks()
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			rt.CapabilityArgs = map[string]any{"bandwidth": c.bw}
			_, err := w.rt.add(list, rt)
			wantCode(t, err, codes.InvalidNetworkConfig, c.field)
			if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("links changed: %v -> %v", before, after)
			}
			if r := w.reservations("bwbad"); len(r) != 0 {
				t.Errorf("addresses left: %v", r)
			}
		})
	}
}

// The reference bandwidth plugin's static fields shape too; GC collects the ifb of an
// attachment no runtime holds.
func TestBandwidthStaticFieldsAndGC(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	extra := map[string]any{"egressRate": bwEgress, "egressBurst": bwBurst}
	list := w.network("bwgc", "mbw3", "10.214.3.0/24", extra)
	_, keep, _ := bwAttach(t, w.rt, list, nil)
	_, gone, _ := bwAttach(t, w.rt, list, nil)
	if n := len(ifbsIn(t, w.host)); n != 2 {
		t.Fatalf("%d ifbs, want 2 from the static egressRate", n)
	}
	if err := w.rt.gc(list, keep); err != nil {
		t.Fatal(err)
	}
	ifbs := ifbsIn(t, w.host)
	if want := shaping.IfbFor("bwgc", keep.ContainerID, "eth0").Name; len(ifbs) != 1 || ifbs[0] != want {
		t.Errorf("after GC: ifbs %v, want only %s (%s's is %s)", ifbs, want, gone.ContainerID, shaping.IfbFor("bwgc", gone.ContainerID, "eth0").Name)
	}
}

// moor-macvlan shapes inside the container: the same rates, measured against an
// unshaped container on the same master.
func TestBandwidthMacvlanTraffic(t *testing.T) {
	w := newMvWorld(t)
	conf := w.mvConf(10, nil)
	conf["capabilities"] = map[string]any{"bandwidth": true}
	list := conflist(t, "1.1.0", "mvbw", conf)
	peer, _, peerRes := w.mvAttach(list)
	inOnly, rtIn, inIP := bwAttach(t, w.rt, list, bandwidth(bwIngress, 0))
	outOnly, rtOut, outIP := bwAttach(t, w.rt, list, bandwidth(0, bwEgress))
	wantShaped(t, inOnly, inIP, peer, ipOf(peerRes), bwIngress, 0)
	wantShaped(t, outOnly, outIP, peer, ipOf(peerRes), 0, bwEgress)
	if err := w.rt.check(list, rtIn); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := inOnly.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(shaping.IfbFor("mvbw", rtIn.ContainerID, "eth0").AltName)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, w.rt.check(list, rtIn), codes.CheckFailed, "ifb")
	for _, rt := range []*libcni.RuntimeConf{rtIn, rtOut} {
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	for _, ctr := range []ns.NetNS{inOnly, outOnly} {
		if ifbs := ifbsIn(t, ctr); len(ifbs) != 0 {
			t.Errorf("ifbs left in the container after DEL: %v", ifbs)
		}
	}
}

// moor-overlay shapes the host veth like moor-bridge: a shaped container on h1 against an
// unshaped one on h2, over VXLAN.
func TestBandwidthOverlayTraffic(t *testing.T) {
	l := upLab(t, labPlugin)
	h1, _ := l.Host("h1")
	rt := hostRuntime(t, h1)
	path, err := l.ConflistPath("h1", ovNetwork)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Declare the capability, as moor's conflists do, so libcni passes runtimeConfig.
	var entry map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &entry); err != nil {
		t.Fatal(err)
	}
	entry["capabilities"] = map[string]any{"bandwidth": true}
	list = conflist(t, "1.1.0", list.Name, entry)

	c1 := plugintestNetns(t)
	rt1 := attachment(c1, "eth0")
	rt1.CapabilityArgs = bandwidth(bwIngress, bwEgress)
	res, err := rt.add(list, rt1)
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, l, "h1", "h2")
	c2, _ := l.Container("c2")
	c2NS, err := ns.GetNS(c2.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c2NS.Close()
	wantShaped(t, c1, ipOf(res), c2NS, c2.Attachments[0].IP, bwIngress, bwEgress)
	if err := rt.check(list, rt1); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	h1NS, _ := ns.GetNS(h1.NetnsPath())
	defer h1NS.Close()
	if n := len(ifbsIn(t, h1NS)); n != 1 {
		t.Errorf("%d ifbs on h1, want 1", n)
	}
	if err := rt.del(list, rt1); err != nil {
		t.Fatal(err)
	}
	if ifbs := ifbsIn(t, h1NS); len(ifbs) != 0 {
		t.Errorf("ifbs left on h1 after DEL: %v", ifbs)
	}
}

// A failed macvlan ADD after shaping leaves the container as it was: no macvlan, no ifb.
func TestBandwidthMacvlanFaultRollsBack(t *testing.T) {
	w := newMvWorld(t)
	conf := w.mvConf(60, nil)
	conf["capabilities"] = map[string]any{"bandwidth": true}
	list := conflist(t, "1.1.0", "mvbwfault", conf)
	snap := w.snapshot()
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	rt.CapabilityArgs = bandwidth(bwIngress, bwEgress)
	t.Setenv("MOOR_TEST_FAULT", "macvlan/after-shaping")
	if _, err := w.rt.add(list, rt); err == nil || !strings.Contains(err.Error(), "macvlan/after-shaping") {
		t.Fatalf("ADD with macvlan/after-shaping armed: %v", err)
	}
	t.Setenv("MOOR_TEST_FAULT", "")
	w.wantBack(t, snap, "mvbwfault")
	if got := links(t, ctr.Path()); strings.Join(got, ",") != "lo" {
		t.Errorf("container links after the failed ADD: %v", got)
	}
}

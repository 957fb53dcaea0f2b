package integration

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// Bridge VLANs with packets. These tests need bridge VLAN filtering (and the tagged
// capture 802.1q-aware frames); scripts/vmtest.sh runs them on Debian's stock kernel.

// vlanNet is a moor-bridge network on bridge with VLAN settings and its own slice of a
// shared subnet (so several networks share one bridge and one L2 segment), without a
// gateway unless gw.
func (w *world) vlanNet(name, bridge, subnet, first, last string, gw bool, extra map[string]any) *libcni.NetworkConfigList {
	conf := w.bridgeConf(bridge, subnet, map[string]any{
		"isGateway": gw, "isDefaultGateway": false, "ipMasq": false, "isolation": false,
		"ipam": map[string]any{"type": "moor-ipam", "dataDir": w.dataDir, "ranges": [][]map[string]any{{{
			"subnet": subnet, "rangeStart": first, "rangeEnd": last,
		}}}},
	})
	for k, v := range extra {
		conf[k] = v
	}
	return conflist(w.t, "1.1.0", name, conf)
}

// refVlanNet is a network of the reference bridge plugin (Debian's knows vlan) on bridge
// in VLAN vlan: moor allows one moor network per bridge (its firewall chains are the
// bridge's), so the other VLANs' ports on a moor bridge are the reference plugin's.
func (w *world) refVlanNet(name, bridge, subnet, first, last string, vlan int) *libcni.NetworkConfigList {
	return conflist(w.t, "0.4.0", name, map[string]any{
		"type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false, "vlan": vlan,
		"ipam": map[string]any{"type": "host-local", "dataDir": w.t.TempDir(), "ranges": [][]map[string]any{{{
			"subnet": subnet, "rangeStart": first, "rangeEnd": last,
		}}}},
	})
}

// portVlans lists the VLAN entries of a host link as "<id>[ pvid][ untagged]", sorted.
func (w *world) portVlans(link string) []string {
	w.t.Helper()
	var out []string
	err := w.host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		all, err := netlink.BridgeVlanList()
		if err != nil {
			return err
		}
		for _, v := range all[int32(l.Attrs().Index)] {
			s := fmt.Sprint(v.Vid)
			if v.PortVID() {
				s += " pvid"
			}
			if v.EngressUntag() {
				s += " untagged"
			}
			out = append(out, s)
		}
		return nil
	})
	if err != nil {
		w.t.Fatalf("VLANs of %s: %v", link, err)
	}
	sort.Strings(out)
	return out
}

// vlanIndexes are the host's link indexes that carry any bridge VLAN entry.
func (w *world) vlanIndexes() map[int32]bool {
	w.t.Helper()
	idx := map[int32]bool{}
	err := w.host.Do(func(ns.NetNS) error {
		all, err := netlink.BridgeVlanList()
		for i := range all {
			idx[i] = true
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return idx
}

func (w *world) linkIndex(name string) int32 {
	w.t.Helper()
	var idx int32
	err := w.host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(name)
		if err == nil {
			idx = int32(l.Attrs().Index)
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return idx
}

func hostVethOf(res *current.Result) string { return res.Interfaces[1].Name }

func wantList(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: %q, want %q", what, got, want)
	}
}

// Access ports: two containers in VLAN 10 reach each other and the gateway; a container in
// VLAN 20 on the same bridge and subnet is unreachable, while one of another network in
// VLAN 10 on that bridge is reachable (so it is the VLAN that separates them). CHECK names a removed VLAN
// entry; DEL and GC leave no entry of the attachments they remove.
func TestBridgeVlanAccess(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelBridgeVlan)
	w := newWorld(t, "")
	const subnet = "10.218.0.0/24"
	netA := w.vlanNet("vlana", "mvla0", subnet, "10.218.0.2", "10.218.0.49", true, map[string]any{"vlan": 10})
	netB := w.refVlanNet("vlanb", "mvla0", subnet, "10.218.0.100", "10.218.0.149", 20)
	netC := w.refVlanNet("vlanc", "mvla0", subnet, "10.218.0.150", "10.218.0.199", 10)
	c1, rt1, res1 := w.attach(netA)
	_, rt2, res2 := w.attach(netA) // the second ADD on a filtering bridge (once EBUSY, code 104)
	c3, _, res3 := w.attach(netB)
	_, _, res4 := w.attach(netC)

	if err := ping(c1, ipOf(res2)); err != nil {
		t.Errorf("VLAN 10 to VLAN 10: %v", err)
	}
	if err := ping(c1, "10.218.0.1"); err != nil {
		t.Errorf("VLAN 10 to its gateway: %v", err)
	}
	if err := ping(c1, ipOf(res4)); err != nil {
		t.Errorf("VLAN 10 to VLAN 10 of another network on the bridge: %v", err)
	}
	if err := ping(c1, ipOf(res3)); err == nil {
		t.Errorf("a container in VLAN 10 reached %s in VLAN 20", ipOf(res3))
	}
	if err := ping(c3, ipOf(res2)); err == nil {
		t.Errorf("a container in VLAN 20 reached %s in VLAN 10", ipOf(res2))
	}

	wantList(t, "VLAN 10 port", w.portVlans(hostVethOf(res1)), "1 untagged", "10 pvid untagged")
	if self := w.portVlans("mvla0"); !contains(self, "10 pvid untagged") {
		t.Errorf("the bridge (gateway of VLAN 10) has %q, want VLAN 10 pvid untagged", self)
	}

	if err := w.rt.check(netA, rt1); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	err := w.host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(hostVethOf(res1))
		if err != nil {
			return err
		}
		return netlink.BridgeVlanDel(l, 10, true, true, false, true)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, w.rt.check(netA, rt1), 110, "VLAN 10")

	idx1, idx2 := w.linkIndex(hostVethOf(res1)), w.linkIndex(hostVethOf(res2))
	if err := w.rt.gc(netA, rt1); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if w.vlanIndexes()[idx2] {
		t.Errorf("GC left VLAN entries of the gone attachment %s", rt2.ContainerID)
	}
	if err := w.rt.del(netA, rt1); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if w.vlanIndexes()[idx1] {
		t.Error("DEL left VLAN entries of the port")
	}
}

// A trunk port (vlanTrunk 10 and 20-21, preserveDefaultVlan false) carries exactly those
// VLANs, tagged: the container sees the broadcasts of VLANs 10 and 21 with their tags, and
// none of VLAN 30.
func TestBridgeVlanTrunk(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelBridgeVlan)
	w := newWorld(t, "")
	const subnet = "10.219.0.0/24"
	trunk := w.vlanNet("vlant", "mvlt0", subnet, "10.219.0.100", "10.219.0.149", false, map[string]any{
		"vlanTrunk":           []map[string]any{{"id": 10}, {"minID": 20, "maxID": 21}},
		"preserveDefaultVlan": false,
	})
	ct, rtT, resT := w.attach(trunk)
	in10, _, _ := w.attach(w.refVlanNet("vlan10", "mvlt0", subnet, "10.219.0.2", "10.219.0.9", 10))
	in30, _, _ := w.attach(w.refVlanNet("vlan30", "mvlt0", subnet, "10.219.0.30", "10.219.0.39", 30))
	in21, _, _ := w.attach(w.refVlanNet("vlan21", "mvlt0", subnet, "10.219.0.21", "10.219.0.29", 21))

	wantList(t, "trunk port", w.portVlans(hostVethOf(resT)), "10", "20", "21")
	if err := w.rt.check(trunk, rtT); err != nil {
		t.Errorf("CHECK: %v", err)
	}

	capture, err := plugintest.StartCapture(ct, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	arpFor := func(ip string, vlan int) func(plugintest.Frame) bool {
		return func(f plugintest.Frame) bool { return f.VLAN == vlan && f.ARPTarget().Equal(net.ParseIP(ip)) }
	}
	// Pings to absent addresses: each sends ARP broadcasts into its VLAN.
	_ = ping(in10, "10.219.0.250")
	_ = ping(in30, "10.219.0.251")
	_ = ping(in21, "10.219.0.252")
	if _, ok := capture.WaitFor(10*time.Second, arpFor("10.219.0.250", 10)); !ok {
		t.Error("the trunk port did not receive VLAN 10's broadcast tagged 10")
	}
	if _, ok := capture.WaitFor(10*time.Second, arpFor("10.219.0.252", 21)); !ok {
		t.Error("the trunk port did not receive VLAN 21's broadcast tagged 21")
	}
	for _, f := range capture.Frames() {
		if f.ARPTarget().Equal(net.ParseIP("10.219.0.251")) || f.VLAN == 30 {
			t.Errorf("the trunk port received a frame of VLAN 30: %+v", f)
		}
		if f.VLAN == 0 && !f.Outgoing && f.EtherType == 0x0806 {
			t.Errorf("the trunk port (no VLAN 1, no PVID) received an untagged ARP: %+v", f)
		}
	}
}

// A conflist written for the reference bridge plugin with its VLAN fields works with only
// its type changed, and the container's port gets the same VLAN entries as the reference
// plugin (Debian's, which knows vlan) gives it.
func TestBridgeVlanReferenceConfig(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelBridgeVlan)
	w := newWorld(t, "")
	conf := func(pluginType, bridge, subnet string) map[string]any {
		return map[string]any{
			"type": pluginType, "bridge": bridge, "isGateway": false, "ipMasq": false,
			"vlan": 100,
			"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]any{{{"subnet": subnet}}}, "dataDir": t.TempDir()},
		}
	}
	ref := conflist(t, "0.4.0", "vlanref", conf("bridge", "mvlr0", "10.220.0.0/24"))
	moor := conflist(t, "0.4.0", "vlanmoor", conf("moor-bridge", "mvlm0", "10.220.1.0/24"))
	_, _, refRes := w.attach(ref)
	_, rt, moorRes := w.attach(moor)
	refVlans, moorVlans := w.portVlans(hostVethOf(refRes)), w.portVlans(hostVethOf(moorRes))
	wantList(t, "moor's port", moorVlans, refVlans...)
	wantList(t, "moor's port", moorVlans, "1 untagged", "100 pvid untagged")

	full := conf("moor-bridge", "mvlf0", "10.220.2.0/24")
	full["isGateway"] = true
	full["vlanTrunk"] = []map[string]any{{"id": 101}, {"minID": 200, "maxID": 202}}
	full["preserveDefaultVlan"] = false
	list := conflist(t, "1.0.0", "vlanfull", full)
	ctr2, rt2, res2 := w.attach(list)
	wantList(t, "port of the full config", w.portVlans(hostVethOf(res2)), "100 pvid untagged", "101", "200", "201", "202")
	if err := ping(ctr2, "10.220.2.1"); err != nil {
		t.Errorf("VLAN 100 to its gateway: %v", err)
	}
	for _, a := range []struct {
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	}{{moor, rt}, {list, rt2}} {
		if err := w.rt.check(a.list, a.rt); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		if err := w.rt.del(a.list, a.rt); err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
}

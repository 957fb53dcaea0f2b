package integration

import (
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// A <link>.<id> master on a kernel with 802.1q: the first ADD creates the VLAN link on the
// master (marked as moor's), the second shares it, the containers' frames leave the master
// tagged with the id, and the link goes with its last user. A VLAN link moor did not
// create is used and never removed.
func TestMacvlanVlanMaster(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.Kernel8021Q)
	w := newMvWorld(t)
	snap := w.snapshot()
	sub := mvParent + ".10"
	list := w.mvNetwork("mvvlan", 10, map[string]any{"master": sub})
	c1, rt1, _ := w.mvAttach(list)
	c2, rt2, res2 := w.mvAttach(list)
	vlan, ok := linkIn(t, w.host, sub).(*netlink.Vlan)
	if !ok || vlan.VlanId != 10 || vlan.Attrs().ParentIndex != w.parentIndex(mvParent) || vlan.Attrs().Alias != "moor-vlan" {
		t.Fatalf("%s is %+v, want VLAN 10 on %s marked moor-vlan", sub, linkIn(t, w.host, sub), mvParent)
	}
	for _, c := range []ns.NetNS{c1, c2} {
		if mv := macvlanIn(t, c, "eth0"); mv.Attrs().ParentIndex != vlan.Attrs().Index {
			t.Errorf("eth0 of %s hangs off link %d, want %s (%d)", c.Path(), mv.Attrs().ParentIndex, sub, vlan.Attrs().Index)
		}
	}
	if err := ping(c1, ipOf(res2)); err != nil {
		t.Errorf("between the two containers on %s: %v", sub, err)
	}

	capture, err := plugintest.StartCapture(w.host, mvParent)
	if err != nil {
		t.Fatal(err)
	}
	const absent = "10.230.0.249"
	_ = ping(c1, absent) // ARP broadcasts out through the master
	tagged, ok := capture.WaitFor(10*time.Second, func(f plugintest.Frame) bool {
		return f.Outgoing && f.ARPTarget().Equal(net.ParseIP(absent))
	})
	capture.Stop()
	if !ok {
		t.Errorf("no ARP for %s left %s", absent, mvParent)
	} else if tagged.VLAN != 10 {
		t.Errorf("the container's ARP left %s with VLAN %d, want 10", mvParent, tagged.VLAN)
	}

	if err := w.rt.del(list, rt1); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, w.host, sub) == nil {
		t.Fatalf("%s removed while %s still uses it", sub, rt2.ContainerID)
	}
	if err := w.rt.del(list, rt2); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, w.host, sub) != nil {
		t.Errorf("%s left after its last user's DEL", sub)
	}
	w.wantBack(t, snap, "mvvlan")

	t.Run("pre-existing VLAN link", func(t *testing.T) {
		own := mvParent + ".20"
		err := w.host.Do(func(ns.NetNS) error {
			attrs := netlink.NewLinkAttrs()
			attrs.Name, attrs.ParentIndex = own, w.parentIndex(mvParent)
			if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: 20}); err != nil {
				return err
			}
			l, err := netlinksafe.LinkByName(own)
			if err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		})
		if err != nil {
			t.Fatal(err)
		}
		snap := w.snapshot()
		list := w.mvNetwork("mvvlan20", 60, map[string]any{"master": own})
		_, rt, _ := w.mvAttach(list)
		if err := w.rt.del(list, rt); err != nil {
			t.Fatal(err)
		}
		if l := linkIn(t, w.host, own); l == nil {
			t.Fatalf("DEL removed %s, which moor did not create", own)
		}
		w.wantBack(t, snap, "mvvlan20")
	})
}

package vxlan_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/dataplane/planetest"
	"github.com/moornet/moor/overlay/vxlan"
	"github.com/moornet/moor/plugins/plugintest"
)

// vxlanImpl is the VXLAN plane for the dataplane contract.
type vxlanImpl struct{ direct bool }

func macOf(seed string) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x42, 0, 0, 0, byte(len(seed) + int(seed[len(seed)-1]))}
}

func (v vxlanImpl) device(h *planetest.Host) vxlan.Device {
	return vxlan.Device{VXLAN: "moorvx9", VNI: 9, Port: 4789, MAC: macOf(h.Name), Gateway: h.Gateway, Range: planetest.Range, Underlay: h.Underlay}
}

func (v vxlanImpl) New(t *testing.T, h *planetest.Host) (dataplane.Plane, dataplane.Peer) {
	return vxlan.New(h.H, v.device(h), v.direct), v.Ghost(h.Name, h.Subnet, h.Underlay.Addr)
}

func (vxlanImpl) Ghost(id string, subnet netip.Prefix, underlay netip.Addr) dataplane.Peer {
	return dataplane.Peer{HostID: id, Subnet: subnet, Gateway: subnet.Addr().Next(), MAC: macOf(id), Underlay: underlay}
}

func TestContract(t *testing.T) { planetest.Run(t, vxlanImpl{}, "192.168.253") }

// testHost is one test host with its VXLAN device and plane.
type testHost struct {
	*planetest.Host
	dev   vxlan.Device
	plane *vxlan.Plane
	peer  vxlan.Peer // how other hosts see it
}

// pair makes two hosts with their planes ensured and bridges up.
func pair(t *testing.T, underlay string, direct bool) (*testHost, *testHost) {
	t.Helper()
	a, b := planetest.Pair(t, underlay)
	var out []*testHost
	for _, h := range []*planetest.Host{a, b} {
		impl := vxlanImpl{direct: direct}
		th := &testHost{Host: h, dev: impl.device(h)}
		th.plane = vxlan.New(h.H, th.dev, direct)
		th.peer = impl.Ghost(h.Name, h.Subnet, h.Underlay.Addr)
		if created, err := th.plane.Ensure(); err != nil || !created {
			t.Fatalf("Ensure: created %v err %v", created, err)
		}
		h.Bridge(t, th.plane.LinkMTU())
		out = append(out, th)
	}
	return out[0], out[1]
}

func counts(t *testing.T, p *vxlan.Plane) string {
	t.Helper()
	e, err := p.Read()
	if err != nil {
		t.Fatal(err)
	}
	r, n, f := e.Count()
	return fmt.Sprintf("%d routes, %d neighbours, %d fdb", r, n, f)
}

func TestTwoHostsPingAndSync(t *testing.T) {
	plugintest.RequireRoot(t)
	a, b := pair(t, "192.168.250", false)
	ca, ipA := a.Container(t, 0)
	cb, ipB := b.Container(t, 0)
	if err := planetest.Ping(ca, ipB); err == nil {
		t.Fatal("containers reach each other before any peer entry exists")
	}
	if err := a.plane.Apply(b.peer); err != nil {
		t.Fatal(err)
	}
	if err := a.plane.Apply(b.peer); err != nil { // replaying is harmless
		t.Fatalf("second Apply: %v", err)
	}
	if err := b.plane.Apply(a.peer); err != nil {
		t.Fatal(err)
	}
	if got := counts(t, a.plane); got != "1 routes, 1 neighbours, 1 fdb" {
		t.Fatalf("host a holds %s, want one of each", got)
	}
	if err := planetest.Ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	if err := planetest.Ping(cb, ipA); err != nil {
		t.Fatal(err)
	}
	if err := planetest.Ping(a.NS, ipB); err != nil { // the host itself, sourced from its gateway
		t.Fatal(err)
	}

	// Drift: a stale peer's entries and a wrong FDB destination for b.
	stale := vxlan.Peer{HostID: "gone", Subnet: netip.MustParsePrefix("10.240.9.0/24"), Gateway: netip.MustParseAddr("10.240.9.1"),
		MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 9}, Underlay: netip.MustParseAddr("192.168.250.9")}
	if err := a.plane.Apply(stale); err != nil {
		t.Fatal(err)
	}
	wrong := b.peer
	wrong.Underlay = netip.MustParseAddr("192.168.250.77")
	if err := a.plane.Apply(wrong); err != nil {
		t.Fatal(err)
	}
	if err := planetest.Ping(ca, ipB); err == nil {
		t.Fatal("ping works with a wrong FDB destination")
	}
	rep, err := a.plane.Sync([]vxlan.Peer{b.peer})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 4 || rep.Repaired != 1 {
		t.Fatalf("Sync report %+v, want 4 removed (stale route, neighbour, FDB; wrong FDB) and 1 repaired", rep)
	}
	if got := counts(t, a.plane); got != "1 routes, 1 neighbours, 1 fdb" {
		t.Fatalf("after Sync host a holds %s", got)
	}
	if missing, err := a.plane.Missing([]vxlan.Peer{b.peer}); err != nil || len(missing) != 0 {
		t.Fatalf("Missing = %v, %v", missing, err)
	}
	if err := planetest.Ping(ca, ipB); err != nil {
		t.Fatalf("after Sync: %v", err)
	}
	rep, err = a.plane.Sync([]vxlan.Peer{b.peer})
	if err != nil || rep.Drift() != 0 {
		t.Fatalf("second Sync: %+v %v, want no drift", rep, err)
	}

	// Leave: b is removed; nothing remains.
	if err := a.plane.Remove(b.peer); err != nil {
		t.Fatal(err)
	}
	if err := a.plane.Remove(b.peer); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if got := counts(t, a.plane); got != "0 routes, 0 neighbours, 0 fdb" {
		t.Fatalf("after Remove host a holds %s", got)
	}
	if missing, _ := a.plane.Missing([]vxlan.Peer{b.peer}); len(missing) != 3 {
		t.Fatalf("Missing after Remove = %v, want 3 entries", missing)
	}
}

func TestEnsureIsIdempotentAndReplacesIncompatible(t *testing.T) {
	plugintest.RequireRoot(t)
	a, _ := pair(t, "192.168.251", false)
	if err := a.plane.Apply(vxlan.Peer{HostID: "x", Subnet: netip.MustParsePrefix("10.240.5.0/24"), Gateway: netip.MustParseAddr("10.240.5.1"),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 5}, Underlay: netip.MustParseAddr("192.168.251.2")}); err != nil {
		t.Fatal(err)
	}
	created, err := a.plane.Ensure()
	if err != nil || created {
		t.Fatalf("second Ensure: %v %v, want nothing created", created, err)
	}
	if got := counts(t, a.plane); got != "1 routes, 1 neighbours, 1 fdb" {
		t.Fatalf("a kept device lost its entries: %s", got)
	}
	vx, _ := a.H.LinkByName(a.dev.VXLAN)
	v := vx.(*netlink.Vxlan)
	if v.Learning || v.Port != 4789 || v.VxlanId != 9 || !v.SrcAddr.Equal(net.ParseIP("192.168.251.1")) || v.MTU != 1450 || v.HardwareAddr.String() != a.dev.MAC.String() {
		t.Fatalf("vxlan device %+v", v)
	}
	// Another VNI replaces the device.
	moved := a.dev
	moved.VNI = 10
	other := vxlan.New(a.H, moved, false)
	if created, err = other.Ensure(); err != nil || !created {
		t.Fatalf("Ensure with another VNI: %v %v, want the device re-created", created, err)
	}
	if vx, _ := a.H.LinkByName(a.dev.VXLAN); vx.(*netlink.Vxlan).VxlanId != 10 {
		t.Fatalf("device has VNI %d after the replacement", vx.(*netlink.Vxlan).VxlanId)
	}
	if err := other.Teardown(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.H.LinkByName(a.dev.VXLAN); err == nil {
		t.Fatal("vxlan device survived Teardown")
	}
	if err := other.Teardown(); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if _, err := other.Missing(nil); err == nil {
		t.Fatal("Missing without a device: no error")
	}
}

func TestDirectRouting(t *testing.T) {
	plugintest.RequireRoot(t)
	a, b := pair(t, "192.168.252", true)
	ca, _ := a.Container(t, 0)
	_, ipB := b.Container(t, 0)
	far := vxlan.Peer{HostID: "far", Subnet: netip.MustParsePrefix("10.240.8.0/24"), Gateway: netip.MustParseAddr("10.240.8.1"),
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 8}, Underlay: netip.MustParseAddr("198.51.100.8")}
	for _, p := range []vxlan.Peer{b.peer, far} {
		if err := a.plane.Apply(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.plane.Apply(a.peer); err != nil {
		t.Fatal(err)
	}
	e, err := a.plane.Read()
	if err != nil {
		t.Fatal(err)
	}
	r := e.Routes[b.Subnet]
	if !r.Gw.Equal(net.ParseIP("192.168.252.2")) || r.Protocol != vxlan.RouteProtocol {
		t.Fatalf("route to the on-link peer: %+v, want via its underlay address with protocol %d", r, vxlan.RouteProtocol)
	}
	if _, n, f := e.Count(); n != 1 || f != 1 {
		t.Fatalf("%d neighbours and %d FDB entries, want only the far peer's", n, f)
	}
	if err := planetest.Ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	rep, err := a.plane.Sync([]vxlan.Peer{far})
	if err != nil || rep.Removed != 1 {
		t.Fatalf("Sync without b: %+v %v, want b's direct route removed", rep, err)
	}
}

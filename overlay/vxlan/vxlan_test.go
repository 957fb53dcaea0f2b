package vxlan_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/vxlan"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

var overlayRange = netip.MustParsePrefix("10.240.0.0/16")

const bridgeName = "moorov9"

// testHost is one host netns with its underlay address, device and plane.
type testHost struct {
	name   string
	netns  ns.NetNS
	h      netlinksafe.Handle
	dev    vxlan.Device
	plane  *vxlan.Plane
	peer   vxlan.Peer // how other hosts see it
	subnet netip.Prefix
}

func handle(t *testing.T, n ns.NetNS) netlinksafe.Handle {
	t.Helper()
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); nsh.Close() })
	return h
}

func cidr(s string) *net.IPNet {
	ip, n, _ := net.ParseCIDR(s)
	n.IP = ip
	return n
}

// underlay links a and b with a veth (eth0 in each) holding the given addresses.
func underlay(t *testing.T, a, b ns.NetNS, addrA, addrB string) {
	t.Helper()
	ha, hb := handle(t, a), handle(t, b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(b.Fd()))}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h    netlinksafe.Handle
		addr string
	}{{ha, addrA}, {hb, addrB}} {
		l, err := x.h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := x.h.AddrAdd(l, &netlink.Addr{IPNet: cidr(x.addr)}); err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		lo, _ := x.h.LinkByName("lo")
		_ = x.h.LinkSetUp(lo)
	}
}

func newHost(t *testing.T, name string, index int) *testHost {
	t.Helper()
	n := plugintest.Netns(t, "moorvx")
	return &testHost{name: name, netns: n, h: handle(t, n), subnet: netip.MustParsePrefix(fmt.Sprintf("10.240.%d.0/24", index))}
}

func (th *testHost) up(t *testing.T, direct bool) {
	t.Helper()
	u, err := dataplane.ResolveUnderlay(th.h, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	gw := th.subnet.Addr().Next()
	th.dev = vxlan.Device{VXLAN: "moorvx9", VNI: 9, Port: 4789, MAC: randomMAC(th.name),
		Gateway: gw, Range: overlayRange, Underlay: u}
	th.plane = vxlan.New(th.h, th.dev, direct)
	created, err := th.plane.Ensure()
	if err != nil || !created {
		t.Fatalf("Ensure: created %v err %v", created, err)
	}
	// The bridge and its gateway, as package hostnet makes them.
	br, _, err := bridge.Ensure(th.h, bridge.Spec{Name: bridgeName, MTU: th.plane.LinkMTU()})
	if err != nil {
		t.Fatal(err)
	}
	if err := th.h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(gw.AsSlice()), Mask: net.CIDRMask(th.subnet.Bits(), 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := firewall.ApplySysctls(th.netns, []firewall.Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
	th.peer = vxlan.Peer{HostID: th.name, Subnet: th.subnet, Gateway: gw, MAC: th.dev.MAC, Underlay: u.Addr}
}

func randomMAC(seed string) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x42, 0, 0, 0, byte(len(seed) + int(seed[len(seed)-1]))}
}

// container attaches a netns to th's bridge with the subnet's address .2+i.
func (th *testHost) container(t *testing.T, i int) (ns.NetNS, string) {
	t.Helper()
	c := plugintest.Netns(t, "moorvx")
	ip := th.subnet.Addr().Next().Next()
	for range i {
		ip = ip.Next()
	}
	br, err := th.h.LinkByName(bridgeName)
	if err != nil {
		t.Fatal(err)
	}
	hc := handle(t, c)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("vc%d", i), MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(c.Fd()))}
	if err := th.h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	l, err := hc.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := hc.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if err := hc.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(th.subnet.Addr().Next().AsSlice())}); err != nil {
		t.Fatal(err)
	}
	return c, ip.String()
}

func ping(from ns.NetNS, ip string) error {
	return from.Do(func(ns.NetNS) error {
		out, err := exec.Command("busybox", "ping", "-c", "1", "-W", "2", ip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %s: %v: %s", ip, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
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
	a, b := newHost(t, "ha", 1), newHost(t, "hb", 2)
	underlay(t, a.netns, b.netns, "192.168.250.1/24", "192.168.250.2/24")
	a.up(t, false)
	b.up(t, false)
	ca, ipA := a.container(t, 0)
	cb, ipB := b.container(t, 0)
	if err := ping(ca, ipB); err == nil {
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
	if err := ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	if err := ping(cb, ipA); err != nil {
		t.Fatal(err)
	}
	if err := ping(a.netns, ipB); err != nil { // the host itself, sourced from its gateway
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
	if err := ping(ca, ipB); err == nil {
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
	if err := ping(ca, ipB); err != nil {
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
	a, b := newHost(t, "ha", 1), newHost(t, "hb", 2)
	underlay(t, a.netns, b.netns, "192.168.251.1/24", "192.168.251.2/24")
	a.up(t, false)
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
	vx, _ := a.h.LinkByName(a.dev.VXLAN)
	v := vx.(*netlink.Vxlan)
	if v.Learning || v.Port != 4789 || v.VxlanId != 9 || !v.SrcAddr.Equal(net.ParseIP("192.168.251.1")) || v.MTU != 1450 || v.HardwareAddr.String() != a.dev.MAC.String() {
		t.Fatalf("vxlan device %+v", v)
	}
	// Another VNI replaces the device.
	moved := a.dev
	moved.VNI = 10
	other := vxlan.New(a.h, moved, false)
	if created, err = other.Ensure(); err != nil || !created {
		t.Fatalf("Ensure with another VNI: %v %v, want the device re-created", created, err)
	}
	if vx, _ := a.h.LinkByName(a.dev.VXLAN); vx.(*netlink.Vxlan).VxlanId != 10 {
		t.Fatalf("device has VNI %d after the replacement", vx.(*netlink.Vxlan).VxlanId)
	}
	if err := other.Teardown(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.h.LinkByName(a.dev.VXLAN); err == nil {
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
	a, b := newHost(t, "ha", 1), newHost(t, "hb", 2)
	underlay(t, a.netns, b.netns, "192.168.252.1/24", "192.168.252.2/24")
	a.up(t, true)
	b.up(t, true)
	ca, _ := a.container(t, 0)
	_, ipB := b.container(t, 0)
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
	r := e.Routes[b.subnet]
	if !r.Gw.Equal(net.ParseIP("192.168.252.2")) || r.Protocol != vxlan.RouteProtocol {
		t.Fatalf("route to the on-link peer: %+v, want via its underlay address with protocol %d", r, vxlan.RouteProtocol)
	}
	if _, n, f := e.Count(); n != 1 || f != 1 {
		t.Fatalf("%d neighbours and %d FDB entries, want only the far peer's", n, f)
	}
	if err := ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	rep, err := a.plane.Sync([]vxlan.Peer{far})
	if err != nil || rep.Removed != 1 {
		t.Fatalf("Sync without b: %+v %v, want b's direct route removed", rep, err)
	}
}

package bridge_test

import (
	"errors"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

func handle(t *testing.T) netlinksafe.Handle {
	t.Helper()
	n := plugintest.Netns(t, "moorbr")
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); nsh.Close() })
	return h
}

// TestEnsure: a new bridge is up, has a fixed locally administered MAC and the default
// route link's MTU; a second Ensure reuses it; a link of another kind is code 105; Ports
// counts its ports.
func TestEnsure(t *testing.T) {
	h := handle(t)
	// The way out: a veth with MTU 1400 carrying the default route.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0", MTU: 1400, Flags: net.FlagUp}, PeerName: "up1"}); err != nil {
		t.Fatal(err)
	}
	up, _ := h.LinkByName("up0")
	if err := h.AddrAdd(up, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 2), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.IPv4(192, 0, 2, 1)}); err != nil {
		t.Fatal(err)
	}
	br, created, err := bridge.Ensure(h, bridge.Spec{Name: "br-t"})
	if err != nil || !created {
		t.Fatalf("Ensure: created %v, %v", created, err)
	}
	a := br.Attrs()
	if a.MTU != 1400 || a.Flags&net.FlagUp == 0 || a.HardwareAddr[0]&0x02 == 0 || a.HardwareAddr[0]&0x01 != 0 {
		t.Fatalf("new bridge: MTU %d, flags %v, MAC %s; want 1400, up, locally administered unicast", a.MTU, a.Flags, a.HardwareAddr)
	}
	// A port with a lower MAC must not change the bridge's.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "p0", MTU: 1400, MasterIndex: a.Index, HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 1}}, PeerName: "p1"}); err != nil {
		t.Fatal(err)
	}
	again, created, err := bridge.Ensure(h, bridge.Spec{Name: "br-t", MTU: 1300})
	if err != nil || created || again.Attrs().HardwareAddr.String() != a.HardwareAddr.String() || again.Attrs().MTU != 1400 {
		t.Fatalf("second Ensure: created %v, MAC %s MTU %d, %v; want the same bridge", created, again.Attrs().HardwareAddr, again.Attrs().MTU, err)
	}
	if n, err := bridge.Ports(h, "br-t"); err != nil || n != 1 {
		t.Fatalf("Ports = %d, %v; want 1", n, err)
	}
	if n, err := bridge.Ports(h, "nonesuch"); err != nil || n != 0 {
		t.Fatalf("Ports of a missing bridge = %d, %v", n, err)
	}
	_, _, err = bridge.Ensure(h, bridge.Spec{Name: "up0"})
	var e *types.Error
	if !errors.As(plugins.ToCNIError(err), &e) || e.Code != codes.InterfaceConflict {
		t.Fatalf("Ensure over a veth: %v, want code %d", err, codes.InterfaceConflict)
	}
}

// TestEnsureVLANFiltering: filtering is switched on for an existing bridge that lacks it,
// and a bridge that has it and has ports is reused as it is (switching it on again was
// refused with EBUSY and blamed on the kernel).
func TestEnsureVLANFiltering(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelBridgeVlan)
	h := handle(t)
	filtering := func() bool {
		l, err := h.LinkByName("br-v")
		if err != nil {
			t.Fatal(err)
		}
		b := l.(*netlink.Bridge)
		return b.VlanFiltering != nil && *b.VlanFiltering
	}
	br, _, err := bridge.Ensure(h, bridge.Spec{Name: "br-v"})
	if err != nil || filtering() {
		t.Fatalf("plain bridge: filtering %v, %v", filtering(), err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vp0", MasterIndex: br.Attrs().Index}, PeerName: "vp1"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, created, err := bridge.Ensure(h, bridge.Spec{Name: "br-v", VLANFiltering: true}); err != nil || created {
			t.Fatalf("Ensure %d with VLANFiltering on a bridge with a port: created %v, %v", i, created, err)
		}
		if !filtering() {
			t.Fatalf("Ensure %d: VLAN filtering is off", i)
		}
	}
}

// TestRandomMAC: unicast, locally administered, and a different address each call.
func TestRandomMAC(t *testing.T) {
	seen := map[string]bool{}
	for range 64 {
		mac := bridge.RandomMAC()
		if len(mac) != 6 || mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
			t.Fatalf("RandomMAC() = %s: want a 6-byte unicast, locally administered address", mac)
		}
		if seen[mac.String()] {
			t.Fatalf("RandomMAC() returned %s twice", mac)
		}
		seen[mac.String()] = true
	}
}

// Package planetest is the contract every data plane (dataplane.Plane) passes, on real
// kernel objects: two hosts (network namespaces) on one underlay, each with the overlay's
// bridge, gateway and a container, and what a plane must do between them: nothing flows
// before Apply, containers reach each other after it, Apply and Remove are repeatable,
// Sync removes what no peer justifies and reports it as drift, Missing names what is
// absent, Teardown is repeatable. The helpers that build the hosts are exported for an
// implementation's own tests.
//
// What it does not check: an implementation's own kernel entries (their number, their
// form), which its own tests assert.
package planetest

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// Range is the overlay range of the test hosts; host i holds 10.240.i.0/24.
var Range = netip.MustParsePrefix("10.240.0.0/16")

// BridgeName is the overlay bridge on each test host.
const BridgeName = "moorov9"

// pingWait is ping's wait for a reply, in seconds (a deadline, not a measurement).
const pingWait = "2"

// Host is one test host: a netns on the underlay with its subnet.
type Host struct {
	Name     string
	NS       ns.NetNS
	H        netlinksafe.Handle
	Subnet   netip.Prefix
	Gateway  netip.Addr
	Underlay dataplane.Underlay
}

// Impl is the data plane under test.
type Impl interface {
	// New makes h's plane (not yet ensured) and the peer other hosts see h as.
	New(t *testing.T, h *Host) (dataplane.Plane, dataplane.Peer)
	// Ghost is the peer of a host that does not exist, as its lease would describe it.
	Ghost(hostID string, subnet netip.Prefix, underlay netip.Addr) dataplane.Peer
}

// Handle is a netlink handle in n, closed with the test.
func Handle(t *testing.T, n ns.NetNS) netlinksafe.Handle {
	t.Helper()
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); nsh.Close() })
	return h
}

// Pair makes two hosts, "ha" with subnet 10.240.1.0/24 and "hb" with 10.240.2.0/24, linked
// by a veth (eth0 in each) holding <underlay>.1/24 and <underlay>.2/24 (underlay is three
// octets, "192.168.250").
func Pair(t *testing.T, underlay string) (*Host, *Host) {
	t.Helper()
	a, b := newHost(t, "ha", 1), newHost(t, "hb", 2)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(b.NS.Fd()))}
	if err := a.H.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for i, h := range []*Host{a, b} {
		l, err := h.H.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		addr := netip.MustParsePrefix(fmt.Sprintf("%s.%d/24", underlay, i+1))
		if err := h.H.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
			t.Fatal(err)
		}
		if err := h.H.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if lo, err := h.H.LinkByName("lo"); err == nil {
			_ = h.H.LinkSetUp(lo)
		}
		if h.Underlay, err = dataplane.ResolveUnderlay(h.H, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

func newHost(t *testing.T, name string, index int) *Host {
	t.Helper()
	n := plugintest.Netns(t, "moorpl")
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.240.%d.0/24", index))
	return &Host{Name: name, NS: n, H: Handle(t, n), Subnet: subnet, Gateway: subnet.Addr().Next()}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Bridge gives h the overlay bridge with its gateway and turns on forwarding, as package
// hostnet does.
func (h *Host) Bridge(t *testing.T, mtu int) {
	t.Helper()
	br, _, err := bridge.Ensure(h.H, bridge.Spec{Name: BridgeName, MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.H.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(h.Gateway, h.Subnet.Bits()))}); err != nil {
		t.Fatal(err)
	}
	if err := firewall.ApplySysctls(h.NS, []firewall.Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
}

// Container attaches a new netns to h's bridge with the subnet's address .2+i and a
// default route via the gateway; it returns the netns and the address.
func (h *Host) Container(t *testing.T, i int) (ns.NetNS, string) {
	t.Helper()
	c := plugintest.Netns(t, "moorpl")
	ip := h.Gateway.Next()
	for range i {
		ip = ip.Next()
	}
	br, err := h.H.LinkByName(BridgeName)
	if err != nil {
		t.Fatal(err)
	}
	hc := Handle(t, c)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("vc%d", i), MasterIndex: br.Attrs().Index, MTU: br.Attrs().MTU, Flags: net.FlagUp},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(int(c.Fd())), PeerMTU: uint32(br.Attrs().MTU)}
	if err := h.H.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	l, err := hc.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, h.Subnet.Bits()))}); err != nil {
		t.Fatal(err)
	}
	if err := hc.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	if err := hc.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(h.Gateway.AsSlice())}); err != nil {
		t.Fatal(err)
	}
	return c, ip.String()
}

// Ping sends one ping from the netns to ip.
func Ping(from ns.NetNS, ip string) error {
	return from.Do(func(ns.NetNS) error {
		out, err := exec.Command("busybox", "ping", "-c", "1", "-W", pingWait, ip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping %s: %v: %s", ip, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
}

// PingDF sends one ping of size payload bytes with "do not fragment" from the netns to ip
// (iputils ping: busybox's cannot set DF).
func PingDF(from ns.NetNS, ip string, size int) error {
	return from.Do(func(ns.NetNS) error {
		out, err := exec.Command("ping", "-c", "1", "-W", pingWait, "-M", "do", "-s", strconv.Itoa(size), ip).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ping -M do -s %d %s: %v: %s", size, ip, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
}

// Run checks impl against the contract (see the package doc). underlay is three octets
// of an IPv4 /24 no other test of the package uses at the same time.
func Run(t *testing.T, impl Impl, underlay string) {
	plugintest.RequireRoot(t)
	a, b := Pair(t, underlay)
	pa, peerA := impl.New(t, a)
	pb, peerB := impl.New(t, b)
	for _, x := range []struct {
		h     *Host
		plane dataplane.Plane
	}{{a, pa}, {b, pb}} {
		if created, err := x.plane.Ensure(); err != nil || !created {
			t.Fatalf("%s: Ensure: created %v, %v", x.h.Name, created, err)
		}
		if created, err := x.plane.Ensure(); err != nil || created {
			t.Fatalf("%s: second Ensure: created %v, %v; want the device kept", x.h.Name, created, err)
		}
		x.h.Bridge(t, x.plane.LinkMTU())
	}
	ca, ipA := a.Container(t, 0)
	cb, ipB := b.Container(t, 0)
	if err := Ping(ca, ipB); err == nil {
		t.Fatal("containers reach each other before any peer is applied")
	}
	if missing, err := pa.Missing([]dataplane.Peer{peerB}); err != nil || len(missing) == 0 {
		t.Fatalf("Missing before Apply = %v, %v; want b's entries named", missing, err)
	}
	for i := range 2 { // the second Apply replays: harmless
		if err := pa.Apply(peerB); err != nil {
			t.Fatalf("Apply %d: %v", i+1, err)
		}
	}
	if err := pb.Apply(peerA); err != nil {
		t.Fatal(err)
	}
	if err := Ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	if err := Ping(cb, ipA); err != nil {
		t.Fatal(err)
	}
	if err := Ping(a.NS, ipB); err != nil { // the host itself, sourced from its gateway
		t.Fatal(err)
	}
	if missing, err := pa.Missing([]dataplane.Peer{peerB}); err != nil || len(missing) != 0 {
		t.Fatalf("Missing after Apply = %v, %v", missing, err)
	}

	// A host that is gone: Sync removes its entries and reports them.
	ghost := impl.Ghost("gone", netip.MustParsePrefix("10.240.9.0/24"), netip.MustParseAddr(underlay+".9"))
	if err := pa.Apply(ghost); err != nil {
		t.Fatal(err)
	}
	rep, err := pa.Sync([]dataplane.Peer{peerB})
	if err != nil || rep.Removed == 0 || rep.Drift() == 0 {
		t.Fatalf("Sync without the ghost: %+v, %v; want its entries removed as drift", rep, err)
	}
	if missing, err := pa.Missing([]dataplane.Peer{ghost}); err != nil || len(missing) == 0 {
		t.Fatalf("Missing(ghost) after Sync = %v, %v; want its entries gone", missing, err)
	}
	if rep, err := pa.Sync([]dataplane.Peer{peerB}); err != nil || rep.Drift() != 0 {
		t.Fatalf("second Sync: %+v, %v; want no drift", rep, err)
	}
	if err := Ping(ca, ipB); err != nil {
		t.Fatalf("after Sync: %v", err)
	}

	// b leaves.
	for i := range 2 {
		if err := pa.Remove(peerB); err != nil {
			t.Fatalf("Remove %d: %v", i+1, err)
		}
	}
	if missing, err := pa.Missing([]dataplane.Peer{peerB}); err != nil || len(missing) == 0 {
		t.Fatalf("Missing after Remove = %v, %v", missing, err)
	}
	if err := Ping(ca, ipB); err == nil {
		t.Fatal("containers still reach each other after Remove")
	}
	// Sync brings b back.
	if rep, err := pa.Sync([]dataplane.Peer{peerB}); err != nil || rep.Repaired == 0 {
		t.Fatalf("Sync after Remove: %+v, %v; want b repaired", rep, err)
	}
	if err := Ping(ca, ipB); err != nil {
		t.Fatalf("after repairing Sync: %v", err)
	}

	for i := range 2 {
		if err := pa.Teardown(); err != nil {
			t.Fatalf("Teardown %d: %v", i+1, err)
		}
	}
	if err := Ping(ca, ipB); err == nil {
		t.Fatal("containers reach each other after Teardown")
	}
}

package plugintest

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
)

// VethSpec is a veth from a namespace playing the host to eth0 of another namespace.
type VethSpec struct {
	HostName string // the host end's name
	Master   string // bridge in the host the host end joins ("": none)
	HostAddr string // CIDR on the host end ("": none)
	PeerAddr string // CIDR on the peer's eth0
	Gateway  string // the peer's default route goes via this address ("": no route)
}

// Veth makes s between host and peer, both ends up, failing the test on any error.
func Veth(t testing.TB, host, peer ns.NetNS, s VethSpec) {
	t.Helper()
	hh, hns, err := plugins.NetlinkAt(host.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer hns.Close()
	defer hh.Close()
	ph, pns, err := plugins.NetlinkAt(peer.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	defer ph.Close()
	fail := func(what string, err error) {
		if err != nil {
			t.Helper()
			t.Fatalf("veth %s: %s: %v", s.HostName, what, err)
		}
	}
	fail("add", hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.HostName}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(peer.Fd()))}))
	hl, err := hh.LinkByName(s.HostName)
	fail("find the host end", err)
	if s.Master != "" {
		br, err := hh.LinkByName(s.Master)
		fail("find "+s.Master, err)
		fail("join "+s.Master, hh.LinkSetMaster(hl, br))
	}
	if s.HostAddr != "" {
		a, err := netlink.ParseAddr(s.HostAddr)
		fail("parse "+s.HostAddr, err)
		fail("address the host end", hh.AddrAdd(hl, a))
	}
	fail("host end up", hh.LinkSetUp(hl))
	pl, err := ph.LinkByName("eth0")
	fail("find eth0", err)
	a, err := netlink.ParseAddr(s.PeerAddr)
	fail("parse "+s.PeerAddr, err)
	fail("address eth0", ph.AddrAdd(pl, a))
	fail("eth0 up", ph.LinkSetUp(pl))
	if s.Gateway != "" {
		fail("default route", ph.RouteAdd(&netlink.Route{LinkIndex: pl.Attrs().Index, Gw: net.ParseIP(s.Gateway)}))
	}
}

// fillBridgeBound stops FillBridge should a kernel never refuse a port: far above the
// limit of every kernel (1023).
const fillBridgeBound = 4096

// FillBridge puts veth pairs on br, both ends in h's namespace and down (no IPv6 or
// carrier work), until the kernel refuses one with EXFULL: the bridge is full. The host
// ends are named prefix + a number, their peers the same + "p"; it returns the host ends'
// names, which the caller may delete to free ports. The pairs go with the namespace.
func FillBridge(h netlinksafe.Handle, br netlink.Link, prefix string) ([]string, error) {
	var names []string
	for i := range fillBridgeBound {
		name := fmt.Sprintf("%s%d", prefix, i)
		err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: name + "p"})
		if errors.Is(err, unix.EXFULL) {
			return names, nil
		}
		if err != nil {
			return names, fmt.Errorf("port %s on %s: %w", name, br.Attrs().Name, err)
		}
		names = append(names, name)
	}
	return names, fmt.Errorf("bridge %s took %d ports and was never full", br.Attrs().Name, fillBridgeBound)
}

package plugins_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// fakeAdd does what a driver's ADD does, on real kernel objects in a test netns: a
// bridge, a veth pair, an address and a route, with a fault point after each step and
// the undo of each registered right after it.
func fakeAdd(getenv func(string) string, hostNS ns.NetNS) error {
	return hostNS.Do(func(ns.NetNS) error {
		h, err := netlinksafe.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		undo := plugins.NewUndo(nil)
		defer undo.Rollback()

		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "fakebr0"}}
		if err := h.LinkAdd(br); err != nil {
			return err
		}
		undo.Push("delete bridge", func() error { return plugins.DeleteLinkByName(h, "fakebr0") })
		if err := plugins.Fault(getenv, "fake/after-bridge"); err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fakeh0"}, PeerName: "fakec0"}
		if err := h.LinkAdd(veth); err != nil {
			return err
		}
		undo.Push("delete veth", func() error { return plugins.DeleteLinkByName(h, "fakeh0") })
		if err := plugins.Fault(getenv, "fake/after-veth"); err != nil {
			return err
		}
		link, err := h.LinkByName("fakec0")
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, 0, 2), Mask: net.CIDRMask(24, 32)}}
		if err := h.AddrAdd(link, addr); err != nil {
			return err
		}
		undo.Push("delete address", func() error { return h.AddrDel(link, addr) })
		if err := h.LinkSetUp(link); err != nil {
			return err
		}
		if err := plugins.Fault(getenv, "fake/after-addr"); err != nil {
			return err
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 8, 0, 0), Mask: net.CIDRMask(16, 32)}, Gw: net.IPv4(10, 9, 0, 1)}
		if err := h.RouteAdd(route); err != nil {
			return err
		}
		undo.Push("delete route", func() error { return h.RouteDel(route) })
		if err := plugins.Fault(getenv, "fake/after-route"); err != nil {
			return err
		}
		undo.Commit()
		return nil
	})
}

func linkNames(t *testing.T, hostNS ns.NetNS) []string {
	var names []string
	err := hostNS.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestRollbackAfterEveryStep(t *testing.T) {
	points := []string{"fake/after-bridge", "fake/after-veth", "fake/after-addr", "fake/after-route"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			hostNS := plugintest.Netns(t, "moorfw-undo")
			getenv := func(k string) string {
				if k == plugins.FaultEnv {
					return point
				}
				return ""
			}
			err := fakeAdd(getenv, hostNS)
			if err == nil || plugins.ToCNIError(err).Msg != fmt.Sprintf("fault injected at %s", point) {
				t.Fatalf("fakeAdd with %s armed: err = %v", point, err)
			}
			if names := linkNames(t, hostNS); len(names) != 1 || names[0] != "lo" {
				t.Errorf("after a failure at %s the netns still has links %v", point, names)
			}
		})
	}
	t.Run("no fault", func(t *testing.T) {
		hostNS := plugintest.Netns(t, "moorfw-undo")
		if err := fakeAdd(func(string) string { return "" }, hostNS); err != nil {
			t.Fatal(err)
		}
		if names := linkNames(t, hostNS); len(names) != 4 {
			t.Errorf("a successful ADD left %v, want lo, bridge and the veth pair", names)
		}
	})
}

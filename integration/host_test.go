package integration

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// hostWithUplink gives a test host netns a link "mhdev0" (a veth, the stand-in for a NIC)
// with 10.77.0.2/24, a default route via 10.77.0.1 and a route to 10.78.0.0/16.
func hostWithUplink(t *testing.T) ns.NetNS {
	t.Helper()
	host := plugintest.Netns(t, "moorit-hosth")
	err := host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mhdev0"}, PeerName: "mhpeer0"}); err != nil {
			return err
		}
		dev, err := netlinksafe.LinkByName("mhdev0")
		if err != nil {
			return err
		}
		peer, err := netlinksafe.LinkByName("mhpeer0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(dev, &netlink.Addr{IPNet: cidr("10.77.0.2/24")}); err != nil {
			return err
		}
		for _, l := range []netlink.Link{dev, peer} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		gw := net.ParseIP("10.77.0.1")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: dev.Attrs().Index, Gw: gw}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: dev.Attrs().Index, Dst: cidr("10.78.0.0/16"), Gw: gw})
	})
	if err != nil {
		t.Fatalf("setting up the test host: %v", err)
	}
	return host
}

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

// linkState reports whether name exists in netns and its IPv4 addresses and route
// destinations.
func linkState(t *testing.T, netns ns.NetNS, name string) (exists bool, addrs, routes []string) {
	t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(name)
		if err != nil {
			return nil
		}
		exists = true
		as, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		rs, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
		for _, r := range rs {
			if r.Dst != nil && !isDefaultDst(r.Dst) {
				routes = append(routes, r.Dst.String())
			} else {
				routes = append(routes, "default")
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return exists, addrs, routes
}

func isDefaultDst(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func contains(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

func TestHostModeReportsHostStack(t *testing.T) {
	for _, v := range versionsFrom("0.3.0") {
		t.Run(v, func(t *testing.T) {
			host := hostWithUplink(t)
			r := newRuntime(t, host)
			list := conflist(t, v, "hostnet", map[string]any{"type": "moor-host"})
			rt := attachment(host, "eth0") // the container shares the host's netns
			res, err := r.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var addrs, routes []string
			for _, ip := range res.IPs {
				addrs = append(addrs, ip.Address.String())
			}
			for _, rt := range res.Routes {
				routes = append(routes, rt.Dst.String())
			}
			if !contains(addrs, "10.77.0.2/24") || !contains(routes, "0.0.0.0/0") {
				t.Errorf("result addresses %v routes %v; want the host's 10.77.0.2/24 and default route", addrs, routes)
			}
			if atLeast(v, "0.4.0") {
				if err := r.check(list, rt); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if atLeast(v, "1.1.0") {
				if err := r.status(list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
				if err := r.gc(list); err != nil {
					t.Errorf("GC: %v", err)
				}
			}
			for i := 0; i < 2; i++ {
				if err := r.del(list, rt); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if ok, addrs, _ := linkState(t, host, "mhdev0"); !ok || !contains(addrs, "10.77.0.2/24") {
				t.Errorf("host mode changed the host: mhdev0 present=%v addrs=%v", ok, addrs)
			}
		})
	}
}

func TestHostModeRefusesOtherNetns(t *testing.T) {
	host := hostWithUplink(t)
	ctr := plugintest.Netns(t, "moorit-hostc")
	r := newRuntime(t, host)
	list := conflist(t, "1.0.0", "hostnet", map[string]any{"type": "moor-host"})
	_, err := r.add(list, attachment(ctr, "eth0"))
	wantCode(t, err, 7, "host networking")
}

func TestHostDeviceMovesAndReturns(t *testing.T) {
	for _, ref := range []string{"name", "mac"} {
		t.Run("by "+ref, func(t *testing.T) {
			host := hostWithUplink(t)
			ctr := plugintest.Netns(t, "moorit-hostc")
			device := "mhdev0"
			if ref == "mac" {
				_ = host.Do(func(ns.NetNS) error {
					l, err := netlinksafe.LinkByName("mhdev0")
					if err == nil {
						device = l.Attrs().HardwareAddr.String()
					}
					return err
				})
			}
			r := newRuntime(t, host)
			list := conflist(t, "1.1.0", "hostdev", map[string]any{"type": "moor-host", "device": device})
			rt := attachment(ctr, "net1")
			res, err := r.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.77.0.2/24" {
				t.Errorf("result IPs %+v", res.IPs)
			}
			if ok, _, _ := linkState(t, host, "mhdev0"); ok {
				t.Error("mhdev0 is still in the host after ADD")
			}
			ok, addrs, routes := linkState(t, ctr, "net1")
			if !ok || !contains(addrs, "10.77.0.2/24") || !contains(routes, "10.78.0.0/16") || !contains(routes, "default") {
				t.Errorf("in the container net1 present=%v addrs=%v routes=%v", ok, addrs, routes)
			}
			if err := r.check(list, rt); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			// The device is exclusive: while a container holds it, another ADD cannot work.
			wantCode(t, r.status(list), 50, device)
			if err := r.del(list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := r.status(list); err != nil {
				t.Errorf("STATUS after DEL: %v", err)
			}
			ok, addrs, routes = linkState(t, host, "mhdev0")
			if !ok || !contains(addrs, "10.77.0.2/24") || !contains(routes, "10.78.0.0/16") {
				t.Errorf("after DEL mhdev0 present=%v addrs=%v routes=%v", ok, addrs, routes)
			}
			if ok, _, _ := linkState(t, ctr, "net1"); ok {
				t.Error("net1 still in the container after DEL")
			}
			if err := r.del(list, rt); err != nil {
				t.Errorf("second DEL: %v", err)
			}
		})
	}
}

func TestHostDeviceErrors(t *testing.T) {
	host := hostWithUplink(t)
	ctr := plugintest.Netns(t, "moorit-hostc")
	r := newRuntime(t, host)
	missing := conflist(t, "1.1.0", "hostdev", map[string]any{"type": "moor-host", "device": "nosuch0"})
	_, err := r.add(missing, attachment(ctr, "net1"))
	wantCode(t, err, 7, "nosuch0")
	wantCode(t, r.status(missing), 50, "nosuch0")
	if ok, _, _ := linkState(t, host, "mhdev0"); !ok {
		t.Error("a failed ADD moved mhdev0")
	}
}

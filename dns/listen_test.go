package main

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

// serverAddrs on real links in a test namespace: the gateway when the host holds it, a
// host macvlan's address in the subnet otherwise (for IPv4 and IPv6), never another host
// address in the subnet, and code 7 naming the subnet when there is neither. Many veths
// with link-local addresses only (what every attachment's host end adds) change nothing.
func TestServerAddrs(t *testing.T) {
	host := plugintest.Netns(t, "moordnsla")
	cidr := func(s string) *net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	err := host.Do(func(ns.NetNS) error {
		addLink := func(l netlink.Link, addrs ...string) {
			if err := netlink.LinkAdd(l); err != nil {
				t.Fatalf("adding %s: %v", l.Attrs().Name, err)
			}
			for _, a := range addrs {
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: cidr(a)}); err != nil {
					t.Fatalf("address %s on %s: %v", a, l.Attrs().Name, err)
				}
			}
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		addLink(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gw0"}, PeerName: "gw0p"}, "10.77.0.1/24", "fd77::1/64", "10.78.0.9/24")
		for i := range 20 { // link-local only, like the host ends of attachments
			addLink(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "att" + string(rune('a'+i))}, PeerName: "attp" + string(rune('a'+i))})
		}
		parent, err := netlink.LinkByName("gw0p")
		if err != nil {
			t.Fatal(err)
		}
		addLink(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "shim0", ParentIndex: parent.Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE},
			"10.79.0.5/24", "fd79::5/64")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP
	cases := []struct {
		name     string
		gateways []net.IP
		subnets  []*net.IPNet
		want     []net.IP
		wantCode uint
	}{
		{"v4 gateway on the host", []net.IP{ip("10.77.0.1")}, []*net.IPNet{cidr("10.77.0.0/24")}, []net.IP{ip("10.77.0.1")}, 0},
		{"v6 gateway on the host", []net.IP{ip("fd77::1")}, []*net.IPNet{cidr("fd77::/64")}, []net.IP{ip("fd77::1")}, 0},
		{"dual stack", []net.IP{ip("10.77.0.1"), ip("fd77::1")}, []*net.IPNet{cidr("10.77.0.0/24"), cidr("fd77::/64")}, []net.IP{ip("10.77.0.1"), ip("fd77::1")}, 0},
		{"v4 shim, gateway on the LAN", []net.IP{ip("10.79.0.1")}, []*net.IPNet{cidr("10.79.0.0/24")}, []net.IP{ip("10.79.0.5")}, 0},
		{"v6 shim", []net.IP{ip("fd79::1")}, []*net.IPNet{cidr("fd79::/64")}, []net.IP{ip("fd79::5")}, 0},
		{"a host address that is neither gateway nor shim", []net.IP{ip("10.78.0.1")}, []*net.IPNet{cidr("10.78.0.0/24")}, nil, codes.InvalidNetworkConfig},
		{"nothing of the host in the subnet", []net.IP{ip("10.80.0.1")}, []*net.IPNet{cidr("10.80.0.0/24")}, nil, codes.InvalidNetworkConfig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []net.IP
			err := host.Do(func(ns.NetNS) error {
				var err error
				got, err = serverAddrs(tc.gateways, tc.subnets)
				return err
			})
			if tc.wantCode != 0 {
				var ce *codes.Error
				if !errors.As(err, &ce) || ce.Code != tc.wantCode || !strings.Contains(err.Error(), tc.subnets[0].String()) {
					t.Fatalf("serverAddrs = %v, %v, want code %d naming %s", got, err, tc.wantCode, tc.subnets[0])
				}
				return
			}
			if err != nil || !slices.EqualFunc(got, tc.want, net.IP.Equal) {
				t.Fatalf("serverAddrs = %v, %v, want %v", got, err, tc.want)
			}
		})
	}
}

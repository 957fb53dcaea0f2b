package containerif_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

func cidr(t *testing.T, s string) net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return *n
}

// world is a netns holding a veth pair: "eth0", down and without addresses, and its
// peer, up (this machine's kernel has no dummy links).
func world(t *testing.T) (ns.NetNS, netlinksafe.Handle, netlink.Link) {
	t.Helper()
	n := plugintest.Netns(t, "moorcif")
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); nsh.Close() })
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	peer, err := h.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return n, h, link
}

// result is a dual-stack IPAM result: a default route and an IPv6 route without gw (Routes
// fills in the family gateways) and a route with its own gateway and a priority.
func result(t *testing.T) *current.Result {
	return &current.Result{
		IPs: []*current.IPConfig{
			{Address: cidr(t, "10.77.0.5/24"), Gateway: net.ParseIP("10.77.0.1")},
			{Address: cidr(t, "fd77::5/64"), Gateway: net.ParseIP("fd77::1")},
		},
		Routes: []*types.Route{
			{Dst: cidr(t, "0.0.0.0/0")},
			{Dst: cidr(t, "192.0.2.0/24"), GW: net.ParseIP("10.77.0.9"), Priority: 300},
			{Dst: cidr(t, "fd78::/64")},
		},
	}
}

func findRoute(t *testing.T, h netlinksafe.Handle, link netlink.Link, dst string) netlink.Route {
	t.Helper()
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	want := cidr(t, dst)
	for _, r := range routes {
		if containerif.HasRoute([]netlink.Route{r}, want, nil) {
			return r
		}
	}
	t.Fatalf("no route to %s among %v", dst, routes)
	return netlink.Route{}
}

// TestConfigureUnion: the behaviours every driver now shares, on real kernel objects.
func TestConfigureUnion(t *testing.T) {
	n, h, link := world(t)
	res := result(t)
	routes := containerif.Routes(res)
	if !routes[0].GW.Equal(net.ParseIP("10.77.0.1")) || !routes[2].GW.Equal(net.ParseIP("fd77::1")) {
		t.Fatalf("Routes did not fill the family gateways: %+v %+v", routes[0], routes[2])
	}
	// A link-scoped route: no gateway.
	routes = append(routes, &types.Route{Dst: cidr(t, "203.0.113.0/24")})
	opts := containerif.Options{Notify: true, NetnsPath: n.Path()}
	if err := containerif.Configure(h, link, res.IPs, routes, opts); err != nil {
		t.Fatal(err)
	}

	// NODAD on IPv6: the address is not tentative and carries the flag.
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range addrs {
		if a.IP.Equal(net.ParseIP("fd77::5")) {
			found = true
			if a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0 {
				t.Fatalf("fd77::5 has flags %#x, want NODAD and not tentative", a.Flags)
			}
		}
	}
	if !found {
		t.Fatalf("fd77::5 missing: %v", addrs)
	}
	// Route priority kept; link scope without gateway; gateway routes universe.
	if r := findRoute(t, h, link, "192.0.2.0/24"); r.Priority != 300 || !r.Gw.Equal(net.ParseIP("10.77.0.9")) {
		t.Fatalf("route 192.0.2.0/24: priority %d gw %v, want 300 via 10.77.0.9", r.Priority, r.Gw)
	}
	if r := findRoute(t, h, link, "203.0.113.0/24"); r.Scope != netlink.SCOPE_LINK || r.Gw != nil {
		t.Fatalf("route without gateway has scope %v gw %v, want link scope", r.Scope, r.Gw)
	}
	if r := findRoute(t, h, link, "0.0.0.0/0"); !r.Gw.Equal(net.ParseIP("10.77.0.1")) || r.Scope != netlink.SCOPE_UNIVERSE {
		t.Fatalf("default route %+v", r)
	}
	// Notify, inside the container's netns.
	err = n.Do(func(ns.NetNS) error {
		for _, p := range []string{"net/ipv4/conf/eth0/arp_notify", "net/ipv6/conf/eth0/ndisc_notify"} {
			b, err := os.ReadFile(filepath.Join("/proc/sys", p))
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) != "1" {
				t.Errorf("%s = %q, want 1", p, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// EEXIST tolerated: configuring again (a retried ADD) succeeds and changes nothing.
	if err := containerif.Configure(h, link, res.IPs, routes, opts); err != nil {
		t.Fatalf("second Configure: %v", err)
	}
	prev := &current.Result{IPs: res.IPs, Routes: routes, Interfaces: []*current.Interface{{Name: "eth0", Sandbox: n.Path()}}}
	if problems := containerif.Check(h, "eth0", prev, false); len(problems) != 0 {
		t.Fatalf("Check after Configure: %v", problems)
	}
	// Check names what is gone.
	if err := h.AddrDel(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.77.0.5").To4(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	problems := containerif.Check(h, "eth0", prev, false)
	if len(problems) == 0 || !strings.Contains(strings.Join(problems, "; "), "address 10.77.0.5/24 is missing") {
		t.Fatalf("Check after removing an address: %v", problems)
	}
}

// TestConfigureEnableDAD: with EnableDAD the IPv6 address goes through DAD (no NODAD),
// and without Notify the sysctls stay at the kernel's default.
func TestConfigureEnableDAD(t *testing.T) {
	n, h, link := world(t)
	res := result(t)
	if err := containerif.Configure(h, link, res.IPs, nil, containerif.Options{EnableDAD: true}); err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.Equal(net.ParseIP("fd77::5")) && a.Flags&unix.IFA_F_NODAD != 0 {
			t.Fatalf("fd77::5 has NODAD with EnableDAD")
		}
	}
	err = n.Do(func(ns.NetNS) error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/eth0/arp_notify")
		if err == nil && strings.TrimSpace(string(b)) != "0" {
			t.Errorf("arp_notify = %q without Notify", b)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConfigureNotifyPerFamily: an attachment with IPv4 addresses only announces over ARP;
// ndisc_notify stays at the kernel's default.
func TestConfigureNotifyPerFamily(t *testing.T) {
	n, h, link := world(t)
	var v4 []*current.IPConfig
	for _, ipc := range result(t).IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = append(v4, ipc)
		}
	}
	if err := containerif.Configure(h, link, v4, nil, containerif.Options{Notify: true, NetnsPath: n.Path()}); err != nil {
		t.Fatal(err)
	}
	wantSysctls(t, n, map[string]string{"net/ipv4/conf/eth0/arp_notify": "1", "net/ipv6/conf/eth0/ndisc_notify": "0"})
}

// wantSysctls checks /proc/sys files (paths under it) in the netns n.
func wantSysctls(t *testing.T, n ns.NetNS, want map[string]string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		for p, v := range want {
			b, err := os.ReadFile(filepath.Join("/proc/sys", p))
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) != v {
				t.Errorf("%s = %q, want %s", p, b, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestIPv6Off: IPv6 goes off only when IPAM gave addresses and none is IPv6; without IPAM
// (L2 only) it stays on.
func TestIPv6Off(t *testing.T) {
	res := result(t)
	v4, v6 := res.IPs[:1], res.IPs[1:]
	for _, tc := range []struct {
		name string
		ipam string
		ips  []*current.IPConfig
		want bool
	}{
		{"v4", "moor-ipam", v4, true},
		{"v6", "moor-ipam", v6, false},
		{"dual", "moor-ipam", res.IPs, false},
		{"dhcp v4", "dhcp", v4, true},
		{"no ipam", "", nil, false},
	} {
		if got := containerif.IPv6Off(tc.ipam, tc.ips); got != tc.want {
			t.Errorf("%s: IPv6Off = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestConfigureIPv6Off: with IPv6Off the link comes up with disable_ipv6 set and without
// any IPv6 address, the kernel's link-local included; without it, the link-local appears.
func TestConfigureIPv6Off(t *testing.T) {
	v4 := result(t).IPs[:1]
	for _, off := range []bool{true, false} {
		t.Run(fmt.Sprint("off=", off), func(t *testing.T) {
			n, h, link := world(t)
			if err := containerif.Configure(h, link, v4, nil, containerif.Options{NetnsPath: n.Path(), IPv6Off: off}); err != nil {
				t.Fatal(err)
			}
			err := n.Do(func(ns.NetNS) error {
				b, err := os.ReadFile("/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
				if want := map[bool]string{true: "1", false: "0"}[off]; err == nil && strings.TrimSpace(string(b)) != want {
					t.Errorf("disable_ipv6 = %q, want %s", b, want)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			// The kernel adds the link-local address once it has processed the carrier
			// (link watch, asynchronous): wait for it, or for the operational state
			// that would have come with it.
			var addrs []netlink.Addr
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				l, err := h.LinkByIndex(link.Attrs().Index)
				if err != nil {
					t.Fatal(err)
				}
				if addrs, err = h.AddrList(link, netlink.FAMILY_V6); err != nil {
					t.Fatal(err)
				}
				if len(addrs) > 0 || (off && l.Attrs().OperState == netlink.OperUp) || time.Now().After(deadline) {
					break
				}
			}
			if off && len(addrs) != 0 {
				t.Errorf("IPv6 addresses %v with IPv6Off", addrs)
			}
			if !off && (len(addrs) != 1 || !addrs[0].IP.IsLinkLocalUnicast()) {
				t.Errorf("IPv6 addresses %v without IPv6Off, want the link-local one", addrs)
			}
		})
	}
}

// With Options.Netns (an open fd of the container's netns, no path) the sysctls are
// written from the caller's thread, in the container's netns.
func TestConfigureSysctlsThroughNetnsFd(t *testing.T) {
	n, h, link := world(t)
	fd, err := netns.GetFromPath(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	v4 := result(t).IPs[:1]
	if err := containerif.Configure(h, link, v4, nil, containerif.Options{Notify: true, IPv6Off: true, Netns: fd}); err != nil {
		t.Fatal(err)
	}
	wantSysctls(t, n, map[string]string{"net/ipv4/conf/eth0/arp_notify": "1", "net/ipv6/conf/eth0/disable_ipv6": "1"})
}

// DisableIPv6 writes the sysctl of the netns behind the fd, and leaves the calling
// thread in its own netns.
func TestDisableIPv6ThroughNetnsFd(t *testing.T) {
	n, _, _ := world(t)
	fd, err := netns.GetFromPath(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := containerif.DisableIPv6(fd, "eth0"); err != nil {
		t.Fatal(err)
	}
	wantSysctls(t, n, map[string]string{"net/ipv6/conf/eth0/disable_ipv6": "1"})
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Fatal("the calling thread was left in another network namespace")
	}
}

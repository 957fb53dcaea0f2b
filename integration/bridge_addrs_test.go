package integration

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The container's interface after ADD, for IPv4, IPv6 and dual stack, is exactly what
// the result says and nothing else: its addresses (plus the kernel's IPv6 link-local on a network with IPv6; an IPv4-only
// one has none),
// its connected subnets and a default route per family via the gateway, up; and the
// result's MACs are the kernel's, the host end's included (it is not looked up again
// after its creation). A second attachment gets the same shape.
func TestBridgeContainerAddressesAndRoutes(t *testing.T) {
	w := newWorld(t, "nftables")
	ranges := func(subnets ...string) map[string]any {
		var rs []any
		for _, s := range subnets {
			rs = append(rs, []any{map[string]any{"subnet": s}})
		}
		return map[string]any{"type": "moor-ipam", "dataDir": w.dataDir, "ranges": rs}
	}
	for i, tc := range []struct {
		name    string
		subnets []string
	}{
		{"v4", []string{"10.214.0.0/24"}},
		{"v6", []string{"fd14::/64"}},
		{"dual", []string{"10.215.0.0/24", "fd15::/64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := w.network("addrs"+tc.name, fmt.Sprintf("mbad%d", i), "", map[string]any{"ipam": ranges(tc.subnets...)})
			for n := 0; n < 2; n++ {
				ctr, _, res := w.attach(list)
				checkContainerIf(t, ctr, res, len(tc.subnets))
				checkHostVethMAC(t, w.host, res)
			}
		})
	}
}

func checkContainerIf(t *testing.T, ctr ns.NetNS, res *current.Result, families int) {
	t.Helper()
	if len(res.IPs) != families {
		t.Fatalf("result has %d addresses, want %d: %+v", len(res.IPs), families, res.IPs)
	}
	var wantAddrs, wantRoutes []string
	for _, ipc := range res.IPs {
		wantAddrs = append(wantAddrs, ipc.Address.String())
		subnet := net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		wantRoutes = append(wantRoutes, "connected "+subnet.String())
		def := "0.0.0.0/0"
		if ipc.Address.IP.To4() == nil {
			def = "::/0"
		}
		wantRoutes = append(wantRoutes, "default "+def+" via "+ipc.Gateway.String())
	}
	err := ctr.Do(func(ns.NetNS) error {
		h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		l, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Error("eth0 is not up")
		}
		if got := l.Attrs().HardwareAddr.String(); got != res.Interfaces[2].Mac {
			t.Errorf("eth0 MAC %s, the result says %s", got, res.Interfaces[2].Mac)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var gotAddrs []string
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && strings.Contains(strings.Join(wantAddrs, " "), ":") {
				continue // the kernel's own fe80::/64 address, on a network with IPv6
			}
			gotAddrs = append(gotAddrs, a.IPNet.String())
		}
		slices.Sort(gotAddrs)
		slices.Sort(wantAddrs)
		if !slices.Equal(gotAddrs, wantAddrs) {
			t.Errorf("eth0 addresses %v, want %v", gotAddrs, wantAddrs)
		}
		routes, err := h.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var gotRoutes []string
		for _, r := range routes {
			switch {
			case r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast(), r.Dst != nil && r.Dst.IP.IsMulticast():
				continue // fe80::/64 and multicast: the kernel's for any IPv6 link
			case r.Gw != nil:
				def := "0.0.0.0/0"
				if r.Family == netlink.FAMILY_V6 {
					def = "::/0"
				}
				if r.Dst != nil {
					def = r.Dst.String()
				}
				gotRoutes = append(gotRoutes, "default "+def+" via "+r.Gw.String())
			default:
				gotRoutes = append(gotRoutes, "connected "+r.Dst.String())
			}
		}
		slices.Sort(gotRoutes)
		slices.Sort(wantRoutes)
		if !slices.Equal(gotRoutes, wantRoutes) {
			t.Errorf("eth0 routes %v, want %v", gotRoutes, wantRoutes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkHostVethMAC compares the result's host interface with the kernel's link of that
// name.
func checkHostVethMAC(t *testing.T, host ns.NetNS, res *current.Result) {
	t.Helper()
	err := host.Do(func(ns.NetNS) error {
		hv := res.Interfaces[1]
		if !strings.HasPrefix(hv.Name, "veth") {
			t.Errorf("host interface %q", hv.Name)
		}
		l, err := netlinksafe.LinkByName(hv.Name)
		if err != nil {
			return err
		}
		if got := l.Attrs().HardwareAddr.String(); got != hv.Mac {
			t.Errorf("host veth %s MAC %s, the result says %s", hv.Name, got, hv.Mac)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

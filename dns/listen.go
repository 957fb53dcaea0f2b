package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
)

// serverAddrs picks, for each of the attachment's subnets, the host address the sidecar
// listens on: the subnet's gateway when the host holds it (moor-bridge and moor-overlay put
// it on their bridge), else the address of a host macvlan inside the subnet (the host shim
// of a moor-macvlan network, whose gateway is a router on the LAN; the host's address on
// the macvlan master itself will not do: a master cannot talk to its children). A subnet
// with neither is a config error that says what to do.
func serverAddrs(gateways []net.IP, subnets []*net.IPNet) ([]net.IP, error) {
	local, shims, err := hostAddrs(subnets)
	if err != nil {
		return nil, err
	}
	var out []net.IP
	var missing []string
	for _, sn := range subnets {
		if ip := pickServer(sn, gateways, local, shims); ip != nil {
			out = appendUnique(out, ip)
		} else {
			missing = append(missing, sn.String())
		}
	}
	if len(out) == 0 {
		return nil, plugins.InvalidField("prevResult.ips", strings.Join(missing, ","), "no address of this host in the network: the DNS server listens on the network's gateway (set isGateway on a bridge) or, on a macvlan network, on the host shim's address (set hostShim)")
	}
	return out, nil
}

func pickServer(sn *net.IPNet, gateways, local, shims []net.IP) net.IP {
	for _, gw := range gateways {
		if sn.Contains(gw) && containsIP(local, gw) {
			return gw
		}
	}
	for _, ip := range shims {
		if sn.Contains(ip) {
			return ip
		}
	}
	return nil
}

// hostAddrs lists the addresses of the plugin's (the host's) namespace that lie in one of
// subnets (the only ones serverAddrs can pick), and separately those of them on macvlan
// links (host shims).
//
// Its cost must not grow with the containers on the host: every host veth end has an IPv6
// link-local address, so a dump of all addresses grows with them, and looking up the link
// of each (a new netlink socket per lookup with the package-level calls) made a moor-dns
// ADD take ~0.1 ms more per container already attached. So the dump asks only for the
// subnets' families (an IPv4 network's ADD reads no IPv6 address at all), addresses outside
// the subnets are skipped before any lookup, and the few links left are looked up on one
// handle.
func hostAddrs(subnets []*net.IPNet) (all, shims []net.IP, err error) {
	family := netlink.FAMILY_ALL
	if v4, v6 := families(subnets); v4 != v6 {
		family = netlink.FAMILY_V4
		if v6 {
			family = netlink.FAMILY_V6
		}
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the host's addresses: %w", err)
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, family)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the host's addresses: %w", err)
	}
	kinds := map[int]string{}
	for _, a := range addrs {
		if !inAny(subnets, a.IP) {
			continue
		}
		all = append(all, a.IP)
		kind, seen := kinds[a.LinkIndex]
		if !seen {
			if l, err := h.LinkByIndex(a.LinkIndex); err == nil {
				kind = l.Type()
			}
			kinds[a.LinkIndex] = kind
		}
		if kind == "macvlan" {
			shims = append(shims, a.IP)
		}
	}
	return all, shims, nil
}

// families reports whether subnets hold IPv4 and IPv6 networks.
func families(subnets []*net.IPNet) (v4, v6 bool) {
	for _, sn := range subnets {
		if sn.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

func inAny(subnets []*net.IPNet, ip net.IP) bool {
	for _, sn := range subnets {
		if sn.Contains(ip) {
			return true
		}
	}
	return false
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, x := range list {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

func appendUnique(list []net.IP, ip net.IP) []net.IP {
	if containsIP(list, ip) {
		return list
	}
	return append(list, ip)
}

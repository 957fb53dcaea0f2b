package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
)

// serverAddrs picks, for each of the attachment's subnets, the host address the sidecar
// listens on: the subnet's gateway when the host holds it (moor-bridge and moor-overlay put
// it on their bridge), else the address of a host macvlan inside the subnet (the host shim
// of a moor-macvlan network, whose gateway is a router on the LAN; the host's address on
// the macvlan master itself will not do: a master cannot talk to its children). A subnet
// with neither is a config error that says what to do.
func serverAddrs(gateways []net.IP, subnets []*net.IPNet) ([]net.IP, error) {
	local, shims, err := hostAddrs()
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

// hostAddrs lists the addresses of the plugin's (the host's) namespace, and separately
// those on macvlan links (host shims).
func hostAddrs() (all, shims []net.IP, err error) {
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the host's addresses: %w", err)
	}
	kinds := map[int]string{}
	for _, a := range addrs {
		all = append(all, a.IP)
		kind, seen := kinds[a.LinkIndex]
		if !seen {
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
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

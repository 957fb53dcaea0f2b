package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/plugins"
)

// gatewayPrefix is the lease's gateway with the host subnet's length (10.240.3.1/24).
func gatewayPrefix(l lease.Lease) netip.Prefix { return netip.PrefixFrom(l.Gateway(), l.Subnet.Bits()) }

// ensureGateway puts gw on the bridge and removes its other addresses inside rng (the
// gateway of a subnet the host held before).
func ensureGateway(h netlinksafe.Handle, br netlink.Link, gw, rng netip.Prefix) error {
	name := br.Attrs().Name
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := dataplane.Prefix(a.IPNet)
		switch {
		case !ok:
		case p == gw:
			have = true
		case rng.Contains(p.Addr()):
			if err := h.AddrDel(br, &a); err != nil && !plugins.IsNotFound(err) {
				return fmt.Errorf("removing old gateway %s from %s: %w", p, name, err)
			}
		}
	}
	if have {
		return nil
	}
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(gw)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding gateway %s to %s: %w", gw, name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

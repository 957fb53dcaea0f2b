package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// ensureBridge returns the bridge named in the config (see package link/bridge), with
// VLAN filtering for vlan and vlanTrunk configs and promiscuous with promiscMode; a kernel
// refusing VLAN filtering is code 104 naming the fields.
func ensureBridge(h netlinksafe.Handle, c *conf) (br netlink.Link, created bool, err error) {
	br, created, err = bridge.Ensure(h, bridge.Spec{Name: c.BrName, MTU: c.MTU, VLANFiltering: c.vlanFiltering(), Promisc: c.PromiscMode})
	if vf := (*bridge.VLANFilteringError)(nil); errors.As(err, &vf) {
		err = errNoVlanFiltering(c.BrName, vf.Err)
	}
	return br, created, err
}

// ensureGatewayAddr puts gw (gateway IP with the subnet's mask) on the bridge. An IPv4
// address already there in another subnet is an error unless forceAddress, which
// replaces it (the reference plugin's rule). added tells the caller whether to undo.
func ensureGatewayAddr(h netlinksafe.Handle, br netlink.Link, gw *net.IPNet, force bool) (added bool, err error) {
	family := netlink.FAMILY_V4
	if gw.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := plugins.LinkAddrs(h, br, family) // the bridge's alone: no walk of every link
	if err != nil {
		return false, fmt.Errorf("listing addresses of %s: %w", br.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() == gw.String() {
			return false, nil
		}
	}
	for _, a := range addrs {
		if family == netlink.FAMILY_V6 && (a.IP.IsLinkLocalUnicast() || !a.IPNet.Contains(gw.IP)) {
			continue // IPv6 bridges carry several addresses; only a clash in the same subnet matters
		}
		if !force {
			return false, codes.New(codes.InterfaceConflict, fmt.Sprintf("bridge %s already has address %s, different from the gateway %s (set forceAddress to replace it)", br.Attrs().Name, a.IPNet, gw))
		}
		if err := h.AddrDel(br, &a); err != nil {
			return false, fmt.Errorf("removing old address %s from %s: %w", a.IPNet, br.Attrs().Name, err)
		}
	}
	addr := &netlink.Addr{IPNet: gw}
	if family == netlink.FAMILY_V6 {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("adding gateway %s to %s: %w", gw, br.Attrs().Name, err)
	}
	return true, nil
}

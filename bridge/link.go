package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// ensureBridge returns the bridge named in the config, creating it when missing with the
// config's MTU, else the default-route link's. A link of that name that is not a bridge is
// code 105. created tells the caller to register the bridge's removal as an undo.
func ensureBridge(h netlinksafe.Handle, c *conf) (br netlink.Link, created bool, err error) {
	link, err := h.LinkByName(c.BrName)
	switch {
	case err == nil:
		if _, ok := link.(*netlink.Bridge); !ok {
			return nil, false, codes.New(codes.InterfaceConflict, fmt.Sprintf("bridge %q: a link of that name exists and is a %s, not a bridge", c.BrName, link.Type()))
		}
	case plugins.IsNotFound(err):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = c.BrName
		attrs.MTU = c.MTU
		if attrs.MTU == 0 {
			attrs.MTU = defaultRouteMTU(h)
		}
		attrs.Flags = net.FlagUp
		// A bridge without an address of its own takes the lowest MAC of its ports, so its
		// MAC changes as containers come and go and the containers' ARP entries for the
		// gateway go stale (seconds without traffic). An address set at creation is fixed.
		attrs.HardwareAddr = randomMAC()
		newBr := &netlink.Bridge{LinkAttrs: attrs}
		if c.vlanFiltering() {
			on := true
			newBr.VlanFiltering = &on
		}
		if err := h.LinkAdd(newBr); err != nil {
			if !errors.Is(err, unix.EEXIST) {
				if c.vlanFiltering() {
					return nil, false, errNoVlanFiltering(c.BrName, err)
				}
				return nil, false, fmt.Errorf("creating bridge %s: %w", c.BrName, err)
			}
			// another ADD created it first: reuse it
			return ensureBridge(h, c)
		}
		created = true
		if link, err = h.LinkByName(c.BrName); err != nil {
			return nil, created, fmt.Errorf("looking up new bridge %s: %w", c.BrName, err)
		}
	default:
		return nil, false, fmt.Errorf("looking up bridge %s: %w", c.BrName, err)
	}
	if c.vlanFiltering() && !created {
		if err := h.BridgeSetVlanFiltering(link, true); err != nil {
			return nil, created, errNoVlanFiltering(c.BrName, err)
		}
	}
	if c.PromiscMode && link.Attrs().Promisc == 0 {
		if err := h.SetPromiscOn(link); err != nil {
			return nil, created, fmt.Errorf("setting %s promiscuous: %w", c.BrName, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, created, fmt.Errorf("setting %s up: %w", c.BrName, err)
		}
	}
	return link, created, nil
}

// ensureGatewayAddr puts gw (gateway IP with the subnet's mask) on the bridge. An IPv4
// address already there in another subnet is an error unless forceAddress, which
// replaces it (the reference plugin's rule). added tells the caller whether to undo.
func ensureGatewayAddr(h netlinksafe.Handle, br netlink.Link, gw *net.IPNet, force bool) (added bool, err error) {
	family := netlink.FAMILY_V4
	if gw.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(br, family)
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

// defaultRouteMTU is the MTU of the link that carries the host's IPv4 default route, or
// 0 when there is none (the kernel default applies then).
func defaultRouteMTU(h netlinksafe.Handle) int {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if link, err := h.LinkByIndex(r.LinkIndex); err == nil {
			return link.Attrs().MTU
		}
	}
	return 0
}

// randomMAC is a random unicast, locally administered MAC address.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

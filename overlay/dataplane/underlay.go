package dataplane

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
)

// Underlay is the link VXLAN packets leave by, its IPv4 address and MTU, and its connected
// subnets (for directRouting).
type Underlay struct {
	Link    netlink.Link
	Addr    netip.Addr
	MTU     int
	Subnets []netip.Prefix
}

// ResolveUnderlay finds the underlay from the config's `underlay`: an address held by a
// link, a link name, or "" for the link of the IPv4 default route. The address is the
// given one, else the link's first global IPv4 address.
func ResolveUnderlay(h netlinksafe.Handle, spec string) (Underlay, error) {
	var link netlink.Link
	var want netip.Addr
	switch a, err := netip.ParseAddr(spec); {
	case spec == "":
		l, err := defaultRouteLink(h)
		if err != nil {
			return Underlay{}, err
		}
		link = l
	case err == nil:
		want = a.Unmap()
		l, err := linkWithAddr(h, want)
		if err != nil {
			return Underlay{}, err
		}
		link = l
	default:
		l, err := h.LinkByName(spec)
		if err != nil {
			return Underlay{}, plugins.InvalidField("underlay", spec, "no such link or address on this host")
		}
		link = l
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return Underlay{}, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	u := Underlay{Link: link, MTU: link.Attrs().MTU, Addr: want}
	for _, a := range addrs {
		p, ok := Prefix(a.IPNet)
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		u.Subnets = append(u.Subnets, p.Masked())
		if !u.Addr.IsValid() {
			u.Addr = p.Addr()
		}
	}
	if !u.Addr.IsValid() {
		return Underlay{}, plugins.InvalidField("underlay", link.Attrs().Name, "the link has no global IPv4 address")
	}
	return u, nil
}

// OnLink reports whether a is in one of the underlay's connected subnets (same L2 segment).
func (u Underlay) OnLink(a netip.Addr) bool {
	for _, s := range u.Subnets {
		if s.Contains(a) {
			return true
		}
	}
	return false
}

func defaultRouteLink(h netlinksafe.Handle) (netlink.Link, error) {
	l, err := plugins.DefaultRouteLink(h, netlink.FAMILY_V4)
	if err != nil || l != nil {
		return l, err
	}
	return nil, plugins.InvalidField("underlay", "", "not set and this host has no IPv4 default route to pick the underlay link from")
}

func linkWithAddr(h netlinksafe.Handle, a netip.Addr) (netlink.Link, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	ip := net.IP(a.AsSlice())
	for _, x := range addrs {
		if x.IP.Equal(ip) {
			return h.LinkByIndex(x.LinkIndex)
		}
	}
	return nil, plugins.InvalidField("underlay", a.String(), "no link on this host holds that address")
}

// Package bridge is the Linux bridge the veth drivers attach containers to (moor-bridge's
// network bridge, moor-overlay's per-network bridge): created when missing, reused when
// present, and counted for its ports. A bridge holds at most MaxPorts ports: a port the
// kernel refuses for that reason is a FullError (code 112), which the step that adds the
// port makes of the kernel's answer with PortError.
//
// A new bridge gets a random locally administered MAC at creation: a bridge without an
// address of its own takes the lowest MAC of its ports, so its MAC would change as
// containers come and go and the containers' ARP entries for the gateway would go stale
// (seconds without traffic). Its MTU is the Spec's, else that of the link carrying the
// IPv4 default route, so a bridge is never larger than the way out.
//
// What it does not do: put addresses on the bridge (the gateway rules differ per
// driver), attach ports (package veth), or delete a bridge with its network (the caller
// decides when a bridge is no longer needed).
package bridge

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/sysrand"
)

// Spec is the bridge a driver needs.
type Spec struct {
	Name string
	// MTU of a new bridge; 0: the MTU of the IPv4 default route's link (the kernel's
	// default when there is none). An existing bridge keeps its MTU.
	MTU int
	// VLANFiltering turns 802.1q filtering on (on a new or an existing bridge).
	VLANFiltering bool
	// Promisc puts the bridge in promiscuous mode.
	Promisc bool
}

// VLANFilteringError is a kernel's refusal of VLAN filtering on the bridge (EOPNOTSUPP: a
// kernel without CONFIG_BRIDGE_VLAN_FILTERING); the driver names its config fields in the
// message it makes of it.
type VLANFilteringError struct {
	Bridge string
	Err    error
}

func (e *VLANFilteringError) Error() string {
	return fmt.Sprintf("bridge %s: VLAN filtering refused by the kernel: %v", e.Bridge, e.Err)
}

func (e *VLANFilteringError) Unwrap() error { return e.Err }

// Ensure returns the bridge, creating it (up) when missing; a concurrent creator's bridge
// is reused. A link of that name that is not a bridge is code 105. created tells the
// caller to register the bridge's removal as an undo; it is set also when a later step
// fails.
func Ensure(h netlinksafe.Handle, s Spec) (br netlink.Link, created bool, err error) {
	link, err := h.LinkByName(s.Name)
	switch {
	case err == nil:
		if _, ok := link.(*netlink.Bridge); !ok {
			return nil, false, codes.New(codes.InterfaceConflict, fmt.Sprintf("bridge %q: a link of that name exists and is a %s, not a bridge", s.Name, link.Type()))
		}
	case plugins.IsNotFound(err):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = s.Name
		attrs.MTU = s.MTU
		if attrs.MTU == 0 {
			attrs.MTU = defaultRouteMTU(h)
		}
		attrs.Flags = net.FlagUp
		attrs.HardwareAddr = RandomMAC()
		newBr := &netlink.Bridge{LinkAttrs: attrs}
		if s.VLANFiltering {
			on := true
			newBr.VlanFiltering = &on
		}
		if err := h.LinkAdd(newBr); err != nil {
			if !errors.Is(err, unix.EEXIST) {
				if s.VLANFiltering && errors.Is(err, unix.EOPNOTSUPP) {
					return nil, false, &VLANFilteringError{Bridge: s.Name, Err: err}
				}
				return nil, false, fmt.Errorf("creating bridge %s: %w", s.Name, err)
			}
			// another ADD created it first: reuse it
			return Ensure(h, s)
		}
		created = true
		if link, err = h.LinkByName(s.Name); err != nil {
			return nil, created, fmt.Errorf("looking up new bridge %s: %w", s.Name, err)
		}
	default:
		return nil, false, fmt.Errorf("looking up bridge %s: %w", s.Name, err)
	}
	if s.VLANFiltering && !created {
		if err := ensureVLANFiltering(h, link); err != nil {
			return nil, created, err
		}
	}
	if s.Promisc && link.Attrs().Promisc == 0 {
		if err := h.SetPromiscOn(link); err != nil {
			return nil, created, fmt.Errorf("setting %s promiscuous: %w", s.Name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, created, fmt.Errorf("setting %s up: %w", s.Name, err)
		}
	}
	return link, created, nil
}

// ensureVLANFiltering switches VLAN filtering on an existing bridge on, only when it is off.
// The request carries the flag and the bridge's name, not its index: a request with both
// is a rename for the kernel, and kernels before 6.2 (Debian 12's 6.1) refuse to rename an
// up link with EBUSY, even to its own name, after applying the flag. Nothing else of the
// bridge is rewritten. EOPNOTSUPP (a kernel without CONFIG_BRIDGE_VLAN_FILTERING) is a
// VLANFilteringError.
func ensureVLANFiltering(h netlinksafe.Handle, link netlink.Link) error {
	if b, ok := link.(*netlink.Bridge); ok && b.VlanFiltering != nil && *b.VlanFiltering {
		return nil
	}
	on := true
	attrs := netlink.NewLinkAttrs()
	attrs.Name = link.Attrs().Name // found by name; see above
	if err := h.LinkModify(&netlink.Bridge{LinkAttrs: attrs, VlanFiltering: &on}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return &VLANFilteringError{Bridge: attrs.Name, Err: err}
		}
		return fmt.Errorf("switching VLAN filtering on for bridge %s: %w", attrs.Name, err)
	}
	return nil
}

// defaultRouteMTU is the MTU of the link that carries the IPv4 default route, or 0.
func defaultRouteMTU(h netlinksafe.Handle) int {
	link, err := plugins.DefaultRouteLink(h, netlink.FAMILY_V4)
	if err != nil || link == nil {
		return 0
	}
	return link.Attrs().MTU
}

// Ports counts the links enslaved to the bridge; a missing bridge has none.
func Ports(h netlinksafe.Handle, name string) (int, error) {
	br, err := h.LinkByName(name)
	if err != nil {
		if plugins.IsNotFound(err) {
			return 0, nil
		}
		return 0, err
	}
	links, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("listing links: %w", err)
	}
	n := 0
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			n++
		}
	}
	return n, nil
}

// RandomMAC is a random unicast, locally administered MAC address.
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	sysrand.Read(mac)
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

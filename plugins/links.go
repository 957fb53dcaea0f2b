package plugins

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DeleteLinkByName deletes a link; a link that does not exist is not an error.
func DeleteLinkByName(h netlinksafe.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return err
	}
	if err := h.LinkDel(link); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

// IsNotFound reports whether a netlink error means the object does not exist.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// FindLink finds a link by name or, when ref parses as a MAC address, by MAC.
func FindLink(h netlinksafe.Handle, ref string) (netlink.Link, error) {
	if mac, err := net.ParseMAC(ref); err == nil {
		links, err := h.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				return l, nil
			}
		}
		return nil, netlink.LinkNotFoundError{}
	}
	return h.LinkByName(ref)
}

// DefaultRouteLink is the link of the first default route of family (netlink.FAMILY_V4
// or FAMILY_V6) in the main table of h's namespace, or nil when there is none.
func DefaultRouteLink(h netlinksafe.Handle, family int) (netlink.Link, error) {
	routes, err := h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if link, err := h.LinkByIndex(r.LinkIndex); err == nil {
			return link, nil
		}
	}
	return nil, nil
}

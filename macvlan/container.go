package main

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// createMacvlan creates the container's macvlan on the master: from the host straight into
// the container's netns (IFLA_NET_NS_FD, named CNI_IFNAME there), or inside the container
// with linkInContainer (mh is then the container's handle). A link of that name already in
// the container is code 105; a master the kernel refuses is code 7 naming it.
func createMacvlan(mh, cont netlinksafe.Handle, containerNS int, c *conf, m *master.Master, ifName string) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ifName
	attrs.ParentIndex = m.Link.Attrs().Index
	attrs.MTU = c.MTU
	attrs.HardwareAddr = c.MAC
	if !c.LinkInContainer {
		attrs.Namespace = netlink.NsFd(containerNS)
	}
	err := mh.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: c.mode, BCQueueLen: c.BCQueueLen})
	switch {
	case err == nil:
	case errors.Is(err, unix.EEXIST):
		return nil, codes.Wrap(codes.InterfaceConflict, fmt.Sprintf("interface %q already exists in the container's network namespace", ifName), err)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EBUSY):
		// The kernel's refusals: a passthru macvlan must be the master's only one, a
		// master used by ipvlan cannot take macvlans.
		return nil, plugins.InvalidField("master", m.Name, fmt.Sprintf("the kernel refused a %s macvlan on it (a passthru macvlan must be the master's only macvlan; an ipvlan master takes none): %v", c.Mode, err))
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return nil, plugins.InvalidField("mac", c.MAC.String(), fmt.Sprintf("the kernel refused it: %v", err))
	default:
		return nil, fmt.Errorf("creating macvlan %s on %s: %w", ifName, m.Name, err)
	}
	link, err := cont.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("looking up the new macvlan %s in the container: %w", ifName, err)
	}
	return link, nil
}

// containerTags tags each container macvlan with an altname derived from network,
// container ID and ifname, so that DEL deletes a link only when it is this
// attachment's.
var containerTags = veth.Namer{Prefix: "moor-mv-"}

// tagMacvlan puts the attachment's tag on the container's link.
func tagMacvlan(cont netlinksafe.Handle, link netlink.Link, network, containerID, ifName string) error {
	if err := cont.LinkAddAltName(link, containerTags.AltName(network, containerID, ifName)); err != nil {
		return fmt.Errorf("tagging macvlan %s: %w", ifName, err)
	}
	return nil
}

// deleteMacvlan deletes the container's interface when it is a macvlan carrying this
// attachment's tag (see containerTags). A link without it is not this attachment's
// (another container's, or a DEL with the wrong container ID), and nothing in the host's
// own namespace is ever deleted. A netns or link that is gone is not an error.
func deleteMacvlan(call *plugins.Call, network string) error {
	if call.Netns == "" {
		return nil
	}
	if own, err := plugins.IsOwnNetns(call.Netns); err != nil || own {
		if errors.Is(err, plugins.ErrNetnsGone) {
			return nil
		}
		return err // the host's namespace (own) holds no container link: nil
	}
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		if errors.Is(err, plugins.ErrNetnsGone) {
			return nil
		}
		return err
	}
	defer nsh.Close()
	defer cont.Close()
	link, err := cont.LinkByName(call.IfName)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s in the container: %w", call.IfName, err)
	}
	if _, ok := link.(*netlink.Macvlan); !ok || !containerTags.Tagged(link, network, call.ContainerID, call.IfName) {
		return nil
	}
	if err := cont.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
		return fmt.Errorf("deleting %s in the container: %w", call.IfName, err)
	}
	return nil
}

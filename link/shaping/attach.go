package shaping

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
)

// The drivers' hooks. A veth driver shapes the host end in the host's netns; moor-macvlan
// shapes its link in the container's netns (package doc).

// AddHost shapes the host end of a veth attachment, then brings it up if it is down
// (nothing when l is nil). A driver creates a host end that is to be shaped down and
// leaves bringing it up to AddHost: its qdiscs then go onto a device that is down, which
// spares the ADD one RCU grace period per qdisc (Apply).
func AddHost(call *plugins.Call, h netlinksafe.Handle, hostVeth netlink.Link, network string, l *Limits, undo *plugins.Undo) error {
	if l == nil {
		return nil
	}
	if err := Apply(h, hostVeth, l.HostSide(), IfbFor(network, call.ContainerID, call.IfName), undo); err != nil {
		return err
	}
	if hostVeth.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(hostVeth); err != nil {
		return fmt.Errorf("setting %s up: %w", hostVeth.Attrs().Name, err)
	}
	hostVeth.Attrs().Flags |= net.FlagUp
	return nil
}

// CheckHost names what differs from l on the host end of a veth attachment.
func CheckHost(call *plugins.Call, h netlinksafe.Handle, hostVeth netlink.Link, network string, l *Limits) []string {
	if l == nil {
		return nil
	}
	return Check(h, hostVeth, l.HostSide(), IfbFor(network, call.ContainerID, call.IfName))
}

// DelHost deletes the host-side ifb of a veth attachment when c says there may be one.
func DelHost(call *plugins.Call, network string, c *Conf, capabilities map[string]bool) error {
	if !c.Wanted(capabilities) {
		return nil
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	return Delete(h, IfbFor(network, call.ContainerID, call.IfName))
}

// GCHost deletes the host-side ifbs of network's attachments not in valid.
func GCHost(network string, valid []types.GCAttachment) error {
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	return GC(h, network, valid)
}

// AddContainer shapes the container's own interface, with the ifb in the container's
// netns (moor-macvlan; nothing when l is nil).
func AddContainer(call *plugins.Call, cont netlinksafe.Handle, link netlink.Link, network string, l *Limits, undo *plugins.Undo) error {
	if l == nil {
		return nil
	}
	return Apply(cont, link, l.ContainerSide(), IfbFor(network, call.ContainerID, call.IfName), undo)
}

// CheckContainer names what differs from l on the container's own interface.
func CheckContainer(call *plugins.Call, cont netlinksafe.Handle, link netlink.Link, network string, l *Limits) []string {
	if l == nil {
		return nil
	}
	return Check(cont, link, l.ContainerSide(), IfbFor(network, call.ContainerID, call.IfName))
}

// DelContainer deletes the ifb in the container's netns when c says there may be one; a
// netns that is gone took it along.
func DelContainer(call *plugins.Call, network string, c *Conf, capabilities map[string]bool) error {
	if !c.Wanted(capabilities) || call.Netns == "" {
		return nil
	}
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if errors.Is(err, plugins.ErrNetnsGone) {
		return nil
	}
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer cont.Close()
	return Delete(cont, IfbFor(network, call.ContainerID, call.IfName))
}

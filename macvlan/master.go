package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// vlanMarker is the alias of an 802.1q sub-interface moor created; only a link carrying it
// is ever counted or deleted by moor.
const vlanMarker = "moor-vlan"

// encapEther is the link type (netlink EncapType) a macvlan master must have.
const encapEther = "ether"

// master is the resolved parent link: link is set when it exists (after ensureVLAN, also
// when it was created); vlan is set when the configured master has the <link>.<id> form.
type master struct {
	name string
	link netlink.Link
	vlan *vlanName
}

// masterName is the configured master or, when empty, the link of the default route in
// the namespace h is bound to.
func masterName(h netlinksafe.Handle, c *conf) (string, error) {
	if c.Master != "" {
		return c.Master, nil
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		link, err := plugins.DefaultRouteLink(h, family)
		if err != nil {
			return "", fmt.Errorf("finding the default master: %w", err)
		}
		if link != nil {
			return link.Attrs().Name, nil
		}
	}
	where := "the host"
	if c.LinkInContainer {
		where = "the container's namespace"
	}
	return "", plugins.InvalidField("master", "", fmt.Sprintf("not set, and %s has no default route to take it from", where))
}

// resolveMaster finds the master and checks that it can carry this config's macvlan: it
// exists (or is a <link>.<id> whose link exists), is up, is an Ethernet link, and its MTU
// is at least the config's. Every refusal is code 7 naming the master.
func resolveMaster(h netlinksafe.Handle, c *conf) (*master, error) {
	name, err := masterName(h, c)
	if err != nil {
		return nil, err
	}
	m := &master{name: name}
	if c.vlan != nil && c.Master == name {
		m.vlan = c.vlan
	}
	link, err := h.LinkByName(name)
	switch {
	case err == nil:
		m.link = link
		return m, checkMaster(link, name, c)
	case !plugins.IsNotFound(err):
		return nil, fmt.Errorf("looking up master %s: %w", name, err)
	case m.vlan == nil:
		return nil, plugins.InvalidField("master", name, "no such link")
	}
	parent, err := h.LinkByName(m.vlan.parent)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil, plugins.InvalidField("master", name, fmt.Sprintf("no such link, and no link %q to create it on as VLAN %d", m.vlan.parent, m.vlan.id))
		}
		return nil, fmt.Errorf("looking up %s: %w", m.vlan.parent, err)
	}
	return m, checkMaster(parent, name, c)
}

// checkMaster refuses a link that cannot carry the config's macvlans.
func checkMaster(link netlink.Link, name string, c *conf) error {
	a := link.Attrs()
	if a.Name != name {
		name = fmt.Sprintf("%s (via %s)", name, a.Name)
	}
	if a.Flags&net.FlagLoopback != 0 || a.EncapType != encapEther {
		return plugins.InvalidField("master", name, fmt.Sprintf("cannot carry macvlans: it is a %s link of type %s, not an Ethernet link", link.Type(), a.EncapType))
	}
	if a.Flags&net.FlagUp == 0 {
		return plugins.InvalidField("master", name, "the link is down")
	}
	if c.MTU > a.MTU {
		return plugins.InvalidField("mtu", c.MTU, fmt.Sprintf("above the MTU %d of master %q", a.MTU, name))
	}
	return nil
}

// vlanLink describes the master's 802.1q sub-interface as a shared link: created on its
// parent when missing, marked (alias "moor-vlan") so that moor never counts or deletes one
// it did not create, deleted with its last user. A kernel without 8021q support is code 104.
// user is the calling attachment's altname (vlanUser).
func vlanLink(h netlinksafe.Handle, v *vlanName, name, user string) sharedLink {
	l := sharedLink{
		name:      name,
		marker:    vlanMarker,
		foreignOK: true,
		create: func() (netlink.Link, error) {
			parent, err := h.LinkByName(v.parent)
			if err != nil {
				return nil, plugins.InvalidField("master", name, fmt.Sprintf("no link %q to create it on: %v", v.parent, err))
			}
			attrs := netlink.NewLinkAttrs()
			attrs.Name = name
			attrs.ParentIndex = parent.Attrs().Index
			attrs.Flags = net.FlagUp
			if err := h.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: v.id}); err != nil {
				if errors.Is(err, unix.EOPNOTSUPP) {
					return nil, codes.Wrap(codes.KernelFeature, fmt.Sprintf("master %q: creating VLAN %d on %s needs the kernel's 802.1q support (8021q module), which this kernel lacks", name, v.id, v.parent), err)
				}
				return nil, fmt.Errorf("creating VLAN sub-interface %s: %w", name, err)
			}
			return h.LinkByName(name)
		},
	}
	altnameUsers(h, &l, vlanUserPrefix, user)
	return l
}

// ensureVLAN makes sure the master's sub-interface exists and counts this attachment as
// one of its users, registering the undo.
func ensureVLAN(sh *shared, m *master, user string, undo *plugins.Undo) error {
	l := vlanLink(sh.h, m.vlan, m.name, user)
	link, added, err := sh.acquire(l)
	if err != nil {
		return err
	}
	if added {
		undo.Push("release VLAN "+m.name, func() error { _, err := sh.release(l, only(user)); return err })
	}
	m.link = link
	return nil
}

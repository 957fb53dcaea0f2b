// Package master resolves and checks the parent ("master") link of the drivers that put
// sub-interfaces of a host link into containers (moor-macvlan; an ipvlan driver the same
// way): the configured link or the link of the default route, which must exist, be up,
// be an Ethernet link and have at least the config's MTU (code 7 naming the master
// otherwise).
//
// A master "<link>.<vlan id>" (Docker's parent=eth0.10) is created as an 802.1q
// sub-interface of <link> when it does not exist, marked with the alias "moor-vlan", and
// deleted with its last user (package sharedlink; each attachment leaves an altname
// "moor-v-<network hash>-<attachment hash>" on it: the kernel counts each altname at its
// maximum size against a 64 KiB bound, so about 490 attachments per VLAN master and
// host). A sub-interface without the alias (made by the admin) is used as it is and never
// deleted. A kernel without 8021q support refuses with code 104.
//
// What it does not do: create the driver's own sub-interface in the container.
package master

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// vlanMarker is the alias of an 802.1q sub-interface moor created; only a link carrying it
// is ever counted or deleted by moor.
const vlanMarker = "moor-vlan"

// encapEther is the link type (netlink EncapType) a master must have.
const encapEther = "ether"

// Bounds of a VLAN id.
const (
	vlanMin = 1
	vlanMax = 4094
)

// Altnames of the users of a moor-made VLAN master: "moor-v-" + 12 hex digits of the
// network's hash + "-" + 24 of the attachment's. The kernel counts every altname at its
// maximum size (128 bytes) against a 64 KiB bound, so a link holds about 490 of them.
const (
	vlanUserPrefix    = "moor-v-"
	networkHashLen    = 12
	attachmentHashLen = 24
)

// VLAN is a master of the form <link>.<vlan id>.
type VLAN struct {
	Parent string
	ID     int
}

// ParseVLAN recognises Docker's parent=<link>.<id> (nil when master is not of that form);
// an id outside 1-4094 is code 7 naming the field "master". The form is what the regular
// expression ^(.+)\.([0-9]+)$ matches, checked by hand: package regexp would add its
// code and an initialiser to every process of the drivers that link this package.
func ParseVLAN(master string) (*VLAN, error) {
	parent, digits, ok := splitVLAN(master)
	if !ok {
		return nil, nil
	}
	id, err := strconv.Atoi(digits)
	if err != nil || id < vlanMin || id > vlanMax {
		return nil, plugins.InvalidField("master", master, fmt.Sprintf("the VLAN id after the dot must be between %d and %d", vlanMin, vlanMax))
	}
	return &VLAN{Parent: parent, ID: id}, nil
}

// splitVLAN splits <parent>.<digits> at the last dot: parent non-empty and without a
// newline, digits one or more ASCII digits.
func splitVLAN(s string) (parent, digits string, ok bool) {
	i := strings.LastIndexByte(s, '.')
	if i < 1 || i == len(s)-1 || strings.IndexByte(s[:i], '\n') >= 0 {
		return "", "", false
	}
	for _, c := range []byte(s[i+1:]) {
		if c < '0' || c > '9' {
			return "", "", false
		}
	}
	return s[:i], s[i+1:], true
}

// Spec is a driver's master as configured.
type Spec struct {
	// Configured is the config's master; empty: the link of the default route.
	Configured string
	// VLAN is Configured parsed by ParseVLAN (nil when not of that form).
	VLAN *VLAN
	// InContainer: the master lives in the container's namespace (linkInContainer).
	InContainer bool
	// MTU is the config's MTU of the sub-interfaces (0: the master's).
	MTU int
	// Kind names the sub-interfaces in messages ("macvlan").
	Kind string
}

// Master is the resolved parent link: Link is set when it exists (after EnsureVLAN, also
// when it was created); VLAN is set when the configured master has the <link>.<id> form.
type Master struct {
	Name string
	Link netlink.Link
	VLAN *VLAN
}

// Name is the configured master or, when empty, the link of the default route (IPv4,
// then IPv6) in the namespace h is bound to.
func Name(h netlinksafe.Handle, s Spec) (string, error) {
	if s.Configured != "" {
		return s.Configured, nil
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
	if s.InContainer {
		where = "the container's namespace"
	}
	return "", plugins.InvalidField("master", "", fmt.Sprintf("not set, and %s has no default route to take it from", where))
}

// Resolve finds the master and checks that it can carry the spec's sub-interfaces: it
// exists (or is a <link>.<id> whose link exists), is up, is an Ethernet link, and its MTU
// is at least the spec's. Every refusal is code 7 naming the master.
func Resolve(h netlinksafe.Handle, s Spec) (*Master, error) {
	name, err := Name(h, s)
	if err != nil {
		return nil, err
	}
	m := &Master{Name: name}
	if s.VLAN != nil && s.Configured == name {
		m.VLAN = s.VLAN
	}
	link, err := h.LinkByName(name)
	switch {
	case err == nil:
		m.Link = link
		return m, check(link, name, s)
	case !plugins.IsNotFound(err):
		return nil, fmt.Errorf("looking up master %s: %w", name, err)
	case m.VLAN == nil:
		return nil, plugins.InvalidField("master", name, "no such link")
	}
	parent, err := h.LinkByName(m.VLAN.Parent)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil, plugins.InvalidField("master", name, fmt.Sprintf("no such link, and no link %q to create it on as VLAN %d", m.VLAN.Parent, m.VLAN.ID))
		}
		return nil, fmt.Errorf("looking up %s: %w", m.VLAN.Parent, err)
	}
	return m, check(parent, name, s)
}

// check refuses a link that cannot carry the spec's sub-interfaces.
func check(link netlink.Link, name string, s Spec) error {
	a := link.Attrs()
	if a.Name != name {
		name = fmt.Sprintf("%s (via %s)", name, a.Name)
	}
	if a.Flags&net.FlagLoopback != 0 || a.EncapType != encapEther {
		return plugins.InvalidField("master", name, fmt.Sprintf("cannot carry %ss: it is a %s link of type %s, not an Ethernet link", s.Kind, link.Type(), a.EncapType))
	}
	if a.Flags&net.FlagUp == 0 {
		return plugins.InvalidField("master", name, "the link is down")
	}
	if s.MTU > a.MTU {
		return plugins.InvalidField("mtu", s.MTU, fmt.Sprintf("above the MTU %d of master %q", a.MTU, name))
	}
	return nil
}

// VLANUsersPrefix starts the altname of every user of a VLAN master from network.
func VLANUsersPrefix(network string) string {
	return vlanUserPrefix + sharedlink.Hash(networkHashLen, network) + "-"
}

// VLANUser is the altname an attachment leaves on a moor-made VLAN master while it uses it.
func VLANUser(network, containerID, ifName string) string {
	return VLANUsersPrefix(network) + sharedlink.Hash(attachmentHashLen, network, containerID, ifName)
}

// vlanLink describes the master's 802.1q sub-interface as a shared link: created on its
// parent when missing, marked (alias "moor-vlan") so that moor never counts or deletes one
// it did not create, deleted with its last user. A kernel without 8021q support is code 104.
// user is the calling attachment's altname (VLANUser).
func vlanLink(h netlinksafe.Handle, v *VLAN, name, user string) sharedlink.Link {
	l := sharedlink.Link{
		Name:      name,
		Marker:    vlanMarker,
		ForeignOK: true,
		Create: func() (netlink.Link, error) {
			parent, err := h.LinkByName(v.Parent)
			if err != nil {
				return nil, plugins.InvalidField("master", name, fmt.Sprintf("no link %q to create it on: %v", v.Parent, err))
			}
			attrs := netlink.NewLinkAttrs()
			attrs.Name = name
			attrs.ParentIndex = parent.Attrs().Index
			attrs.Flags = net.FlagUp
			if err := h.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: v.ID}); err != nil {
				if errors.Is(err, unix.EOPNOTSUPP) {
					return nil, codes.Wrap(codes.KernelFeature, fmt.Sprintf("master %q: creating VLAN %d on %s needs the kernel's 802.1q support (8021q module), which this kernel lacks", name, v.ID, v.Parent), err)
				}
				return nil, fmt.Errorf("creating VLAN sub-interface %s: %w", name, err)
			}
			return h.LinkByName(name)
		},
	}
	sharedlink.AltnameUsers(h, &l, vlanUserPrefix, user)
	return l
}

// EnsureVLAN makes sure the master's sub-interface exists and counts the attachment (its
// VLANUser) as one of its users, registering the undo.
func EnsureVLAN(links *sharedlink.Manager, m *Master, user string, undo *plugins.Undo) error {
	l := vlanLink(links.H, m.VLAN, m.Name, user)
	link, added, err := links.Acquire(l)
	if err != nil {
		return err
	}
	if added {
		undo.Push("release VLAN "+m.Name, func() error { _, err := links.Release(l, sharedlink.Only(user)); return err })
	}
	m.Link = link
	return nil
}

// ReleaseVLAN drops one user (its VLANUser) from the moor-made VLAN master name; the
// master goes with its last user.
func ReleaseVLAN(links *sharedlink.Manager, v *VLAN, name, user string) error {
	_, err := links.Release(vlanLink(links.H, v, name, user), sharedlink.Only(user))
	return err
}

// GCVLAN drops the users of network from the VLAN master name that are not in valid; the
// master goes with its last user. Users of other networks are kept.
func GCVLAN(links *sharedlink.Manager, v *VLAN, name, network string, valid []types.GCAttachment) error {
	keep := map[string]bool{}
	for _, a := range valid {
		keep[VLANUser(network, a.ContainerID, a.IfName)] = true
	}
	prefix := VLANUsersPrefix(network)
	_, err := links.Release(vlanLink(links.H, v, name, ""), func(u string) bool { return strings.HasPrefix(u, prefix) && !keep[u] })
	return err
}

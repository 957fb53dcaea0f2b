// Package shim gives the host a link of its own on a master (the "host shim"), so that
// the host reaches the containers of a macvlan-like network (which the kernel otherwise
// forbids between a master and its sub-interfaces) and the containers reach the host at
// the shim's address.
//
// One shim per network: a link on the master (a bridge-mode macvlan unless Shim.Kind
// says otherwise), mvs-<hash of the network name> (alias "moor-shim:<network>"), holding
// an address of the network reserved in IPAM under the key moor-shim-<network>/shim,
// plus a host route to each container address via the shim. The shim is removed, and its address released, with the network's last
// attachment (package sharedlink).
//
// Counting users: each attachment's host routes (/32 and /128 to its addresses via the
// shim) carry moor's route protocol (0x6d) and as metric a 32-bit hash of the attachment.
// They are needed anyway, cost nothing more, and have no count limit. DEL needs no address
// to find them (the metric names the attachment), and GC removes the routes of attachments
// not in the valid list.
//
// The shim holds host prefixes (/32, /128) rather than the subnet, and the host routes
// exactly the containers' addresses via it: a subnet route via the shim would compete with
// the host's own route to the LAN through the master. A shim needs a master in the host
// and an IPAM that reserves before the link exists (not dhcp); the driver checks that.
//
// What it does not do: create the containers' links or configure them.
package shim

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
	"github.com/moornet/moor/plugins/namehash"
)

// Names and keys of a network's shim.
const (
	namePrefix    = "mvs-"
	nameHashLen   = 15 - len(namePrefix) // IFNAMSIZ-1
	markerPrefix  = "moor-shim:"
	idPrefix      = "moor-shim-"
	IfName        = "shim"              // the ifname of the shim's IPAM reservation
	hostNetnsPath = "/proc/self/ns/net" // CNI_NETNS of the shim's reservation: the host's own
)

// validAttachmentsKey is the GC config key that lists the attachments to keep.
const validAttachmentsKey = "cni.dev/valid-attachments"

// requestKeys are the config keys that carry one container's requests (addresses, MAC,
// valid attachments); the shim's reservation must not inherit them.
var requestKeys = []string{"runtimeConfig", "args", "prevResult", validAttachmentsKey}

// Name is the shim's link name on a network.
func Name(network string) string { return namePrefix + sharedlink.Hash(nameHashLen, network) }

func marker(network string) string { return markerPrefix + network }

// ContainerID is the container ID of the shim's IPAM reservation.
func ContainerID(network string) string { return idPrefix + network }

// ipamCall is the IPAM call of the shim's own reservation: the network's config without
// the container's requests (runtimeConfig, args, prevResult), for the key
// moor-shim-<network>/shim, from the host's netns.
func ipamCall(call *plugins.Call) (*plugins.Call, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(call.StdinData, &raw); err != nil {
		return nil, fmt.Errorf("re-reading the config for the shim's reservation: %w", err)
	}
	for _, k := range requestKeys {
		delete(raw, k)
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	sc := *call
	sc.ContainerID = ContainerID(call.NetworkName)
	sc.IfName = IfName
	sc.Args = ""
	sc.Netns = hostNetnsPath
	sc.StdinData = data
	return &sc, nil
}

// Host routes via the shim carry moor's route protocol, and as metric a 32-bit hash of
// their attachment: they are the shim's record of its users (see the package doc).
const (
	routeProtocol = netlink.RouteProtocol(0x6d) // 'm'; not in iproute2's rt_protos
	metricBytes   = 4
)

// Shim manages a network's host shim in the host's namespace for one attachment.
type Shim struct {
	Links    *sharedlink.Manager // in the host's namespace
	Call     *plugins.Call
	Network  string
	IPAMType string       // the network's IPAM plugin, which reserves the shim's address
	Wanted   bool         // the config asks for a shim (DEL and GC also clean up one that is not asked for any more)
	Master   netlink.Link // needed only to create it
	IPs      []net.IP     // the attachment's addresses, routed via the shim (ADD only)
	// Kind makes the shim's link from its attributes (name, parent); nil: MacvlanBridge.
	// A master that carries ipvlans takes no macvlan, so an ipvlan driver passes an
	// ipvlan of its own mode.
	Kind func(netlink.LinkAttrs) netlink.Link
}

// MacvlanBridge is the shim of a macvlan network: a bridge-mode macvlan, which reaches
// the network's other macvlans on the master.
func MacvlanBridge(attrs netlink.LinkAttrs) netlink.Link {
	return &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
}

// userMetric is the metric of an attachment's routes via the shim. Never 0: the kernel
// turns an IPv6 metric 0 into 1024.
func userMetric(network, containerID, ifName string) int {
	sum := namehash.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	m := binary.BigEndian.Uint32(sum[:metricBytes])
	if m == 0 {
		m = 1
	}
	return int(m)
}

func (s *Shim) link() sharedlink.Link {
	h, name := s.Links.H, Name(s.Network)
	metric := userMetric(s.Network, s.Call.ContainerID, s.Call.IfName)
	return sharedlink.Link{
		Name:    name,
		Marker:  marker(s.Network),
		Adopt:   true,
		User:    strconv.Itoa(metric),
		Create:  s.create,
		Destroy: s.releaseAddress,
		AddUser: func(link netlink.Link) error {
			routes, err := hostRoutes(h, link, s.IPs, metric)
			if err != nil {
				return err
			}
			for _, r := range routes {
				if err := h.RouteReplace(r); err != nil {
					return errors.Join(fmt.Errorf("routing %s via host shim %s: %w", r.Dst, name, err), dropMetric(h, link, metric))
				}
			}
			return nil
		},
		Users: func(link netlink.Link) ([]string, error) {
			routes, err := userRoutes(h, link)
			seen := map[string]bool{}
			var out []string
			for _, r := range routes {
				if u := strconv.Itoa(r.Priority); !seen[u] {
					seen[u] = true
					out = append(out, u)
				}
			}
			return out, err
		},
		DropUser: func(link netlink.Link, u string) error {
			m, err := strconv.Atoi(u)
			if err != nil {
				return err
			}
			return dropMetric(h, link, m)
		},
	}
}

// userRoutes are the routes via the shim that record users.
func userRoutes(h netlinksafe.Handle, link netlink.Link) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: link.Attrs().Index, Protocol: routeProtocol, Table: unix.RT_TABLE_MAIN}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing the routes of host shim %s: %w", link.Attrs().Name, err)
	}
	return routes, nil
}

// dropMetric deletes the routes of one user.
func dropMetric(h netlinksafe.Handle, link netlink.Link, metric int) error {
	routes, err := userRoutes(h, link)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range routes {
		if r.Priority != metric {
			continue
		}
		if err := h.RouteDel(&r); err != nil && !plugins.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("removing route %s via %s: %w", r.Dst, link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// create reserves the shim's address and makes the link with it, up; on failure it
// leaves neither.
func (s *Shim) create() (netlink.Link, error) {
	sc, err := ipamCall(s.Call)
	if err != nil {
		return nil, err
	}
	res, err := ipamclient.Add(context.Background(), sc, s.IPAMType)
	if err != nil {
		return nil, fmt.Errorf("reserving the address of host shim %s: %w", Name(s.Network), err)
	}
	link, err := s.makeLink(res)
	if err != nil {
		return nil, errors.Join(err, s.releaseAddress())
	}
	return link, nil
}

func (s *Shim) makeLink(res *current.Result) (netlink.Link, error) {
	h, name := s.Links.H, Name(s.Network)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.ParentIndex = s.Master.Attrs().Index
	kind := s.Kind
	if kind == nil {
		kind = MacvlanBridge
	}
	if err := h.LinkAdd(kind(attrs)); err != nil {
		return nil, fmt.Errorf("creating host shim %s on %s: %w", name, s.Master.Attrs().Name, err)
	}
	link, err := func() (netlink.Link, error) {
		link, err := h.LinkByName(name)
		if err != nil {
			return nil, err
		}
		for _, ipc := range res.IPs {
			if err := h.AddrAdd(link, hostAddr(ipc.Address.IP)); err != nil {
				return nil, fmt.Errorf("adding %s to host shim %s: %w", ipc.Address.IP, name, err)
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("setting host shim %s up: %w", name, err)
		}
		return h.LinkByName(name)
	}()
	if err != nil {
		return nil, errors.Join(err, plugins.DeleteLinkByName(h, name))
	}
	return link, nil
}

// releaseAddress frees the shim's reservation (repeatable).
func (s *Shim) releaseAddress() error {
	if s.IPAMType == "" {
		return nil
	}
	sc, err := ipamCall(s.Call)
	if err != nil {
		return err
	}
	if err := ipamclient.Del(context.Background(), sc, s.IPAMType); err != nil {
		return fmt.Errorf("releasing the address of host shim %s: %w", Name(s.Network), err)
	}
	return nil
}

// hostAddr is ip as a host prefix (/32, /128 without DAD). The shim holds host prefixes
// only: a subnet route via the shim would compete with the host's own route to the same
// LAN through the master.
func hostAddr(ip net.IP) *netlink.Addr {
	if v4 := ip.To4(); v4 != nil {
		return &netlink.Addr{IPNet: &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
}

// Attach makes sure the shim exists and routes the attachment's addresses via it (which
// records the attachment as a user), registering the undo.
func (s *Shim) Attach(undo *plugins.Undo) error {
	l := s.link()
	_, added, err := s.Links.Acquire(l)
	if err != nil {
		return err
	}
	if added {
		undo.Push("release host shim "+l.Name, func() error { _, err := s.Links.Release(l, sharedlink.Only(l.User)); return err })
	}
	return nil
}

// Detach removes the attachment's routes via the shim; the shim goes with its last user.
func (s *Shim) Detach() error {
	l := s.link()
	if !s.Wanted {
		if _, err := s.Links.H.LinkByName(l.Name); plugins.IsNotFound(err) {
			return nil // no shim, and the config does not ask for one
		}
	}
	_, err := s.Links.Release(l, sharedlink.Only(l.User))
	return err
}

// GC drops the users not in valid (their routes go); kept reports whether the shim stays
// (its reservation must then survive IPAM's GC: KeepReservation).
func (s *Shim) GC(valid []types.GCAttachment) (kept bool, err error) {
	l := s.link()
	if _, err := s.Links.H.LinkByName(l.Name); plugins.IsNotFound(err) && !s.Wanted {
		return false, nil
	}
	keep := map[string]bool{}
	for _, v := range valid {
		keep[strconv.Itoa(userMetric(s.Network, v.ContainerID, v.IfName))] = true
	}
	deleted, err := s.Links.Release(l, sharedlink.Except(keep))
	return !deleted, err
}

// hostRoutes are the host routes to each address via the shim, with the shim's address of
// the same family as source and metric as the user's mark. A family the shim has no
// address in gets none.
func hostRoutes(h netlinksafe.Handle, link netlink.Link, ips []net.IP, metric int) ([]*netlink.Route, error) {
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing the addresses of host shim %s: %w", link.Attrs().Name, err)
	}
	var out []*netlink.Route
	for _, ip := range ips {
		for _, a := range addrs {
			if a.Scope != unix.RT_SCOPE_UNIVERSE || (a.IP.To4() == nil) != (ip.To4() == nil) {
				continue
			}
			out = append(out, &netlink.Route{
				LinkIndex: link.Attrs().Index, Dst: hostAddr(ip).IPNet, Src: a.IP, Scope: netlink.SCOPE_LINK,
				Protocol: routeProtocol, Priority: metric, Table: unix.RT_TABLE_MAIN,
			})
			break
		}
	}
	return out, nil
}

// KeepReservation is the GC call with the shim's reservation added to the valid
// attachments, so that IPAM keeps the address of a shim that stays.
func KeepReservation(call *plugins.Call) (*plugins.Call, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(call.StdinData, &raw); err != nil {
		return nil, fmt.Errorf("re-reading the GC config: %w", err)
	}
	var valid []types.GCAttachment
	if v, ok := raw[validAttachmentsKey]; ok {
		if err := json.Unmarshal(v, &valid); err != nil {
			return nil, fmt.Errorf("re-reading %s: %w", validAttachmentsKey, err)
		}
	}
	valid = append(valid, types.GCAttachment{ContainerID: ContainerID(call.NetworkName), IfName: IfName})
	data, err := json.Marshal(valid)
	if err != nil {
		return nil, err
	}
	raw[validAttachmentsKey] = data
	if data, err = json.Marshal(raw); err != nil {
		return nil, err
	}
	gc := *call
	gc.StdinData = data
	return &gc, nil
}

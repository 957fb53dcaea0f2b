package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
)

// The host shim: one bridge-mode macvlan per network on the host side of the master, named
// mvs-<hash of the network>, marked with the alias "moor-shim:<network>", holding an
// address reserved in IPAM under the key moor-shim-<network>/shim.
const (
	shimPrefix       = "mvs-"
	shimNameHashLen  = 15 - len(shimPrefix) // IFNAMSIZ-1
	shimMarkerPrefix = "moor-shim:"
	shimIDPrefix     = "moor-shim-"
	shimIfName       = "shim"
	hostNetnsPath    = "/proc/self/ns/net" // CNI_NETNS of the shim's reservation: the host's own
	ipamTypeDHCP     = "dhcp"
)

// requestKeys are the config keys that carry one container's requests (addresses, MAC,
// valid attachments); the shim's reservation must not inherit them.
var requestKeys = []string{"runtimeConfig", "args", "prevResult", validAttachmentsKey}

func shimName(network string) string        { return shimPrefix + hexHash(shimNameHashLen, network) }
func shimMarker(network string) string      { return shimMarkerPrefix + network }
func shimContainerID(network string) string { return shimIDPrefix + network }

// shimCall is the IPAM call of the shim's own reservation: the network's config without
// the container's requests (runtimeConfig, args, prevResult), for the key
// moor-shim-<network>/shim, from the host's netns.
func shimCall(call *plugins.Call) (*plugins.Call, error) {
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
	sc.ContainerID = shimContainerID(call.NetworkName)
	sc.IfName = shimIfName
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

// shim manages a network's host shim in the host's namespace for one attachment.
type shim struct {
	sh     *shared
	call   *plugins.Call
	c      *conf
	master netlink.Link // needed only to create it
	ips    []net.IP     // the attachment's addresses, routed via the shim (ADD only)
}

// userMetric is the metric of an attachment's routes via the shim. Never 0: the kernel
// turns an IPv6 metric 0 into 1024.
func userMetric(network, containerID, ifName string) int {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	m := binary.BigEndian.Uint32(sum[:metricBytes])
	if m == 0 {
		m = 1
	}
	return int(m)
}

func (s *shim) link() sharedLink {
	h, name := s.sh.h, shimName(s.c.Name)
	metric := userMetric(s.c.Name, s.call.ContainerID, s.call.IfName)
	return sharedLink{
		name:    name,
		marker:  shimMarker(s.c.Name),
		adopt:   true,
		user:    strconv.Itoa(metric),
		create:  s.create,
		destroy: s.releaseAddress,
		addUser: func(link netlink.Link) error {
			routes, err := shimRoutes(h, link, s.ips, metric)
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
		users: func(link netlink.Link) ([]string, error) {
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
		dropUser: func(link netlink.Link, u string) error {
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
func (s *shim) create() (netlink.Link, error) {
	sc, err := shimCall(s.call)
	if err != nil {
		return nil, err
	}
	res, err := ipamclient.Add(context.Background(), sc, s.c.IPAM.Type)
	if err != nil {
		return nil, fmt.Errorf("reserving the address of host shim %s: %w", shimName(s.c.Name), err)
	}
	link, err := s.makeLink(res)
	if err != nil {
		return nil, errors.Join(err, s.releaseAddress())
	}
	return link, nil
}

func (s *shim) makeLink(res *current.Result) (netlink.Link, error) {
	h, name := s.sh.h, shimName(s.c.Name)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.ParentIndex = s.master.Attrs().Index
	if err := h.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		return nil, fmt.Errorf("creating host shim %s on %s: %w", name, s.master.Attrs().Name, err)
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
func (s *shim) releaseAddress() error {
	if s.c.IPAM.Type == "" {
		return nil
	}
	sc, err := shimCall(s.call)
	if err != nil {
		return err
	}
	if err := ipamclient.Del(context.Background(), sc, s.c.IPAM.Type); err != nil {
		return fmt.Errorf("releasing the address of host shim %s: %w", shimName(s.c.Name), err)
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

// attach makes sure the shim exists and routes the attachment's addresses via it (which
// records the attachment as a user), registering the undo.
func (s *shim) attach(undo *plugins.Undo) error {
	l := s.link()
	_, added, err := s.sh.acquire(l)
	if err != nil {
		return err
	}
	if added {
		undo.Push("release host shim "+l.name, func() error { _, err := s.sh.release(l, only(l.user)); return err })
	}
	return nil
}

// detach removes the attachment's routes via the shim; the shim goes with its last user.
func (s *shim) detach() error {
	l := s.link()
	if !s.c.HostShim {
		if _, err := s.sh.h.LinkByName(l.name); plugins.IsNotFound(err) {
			return nil // no shim, and the config does not ask for one
		}
	}
	_, err := s.sh.release(l, only(l.user))
	return err
}

// gc drops the users not in the config's valid attachments (their routes go); kept
// reports whether the shim stays (its reservation must then survive IPAM's GC).
func (s *shim) gc() (kept bool, err error) {
	l := s.link()
	if _, err := s.sh.h.LinkByName(l.name); plugins.IsNotFound(err) && !s.c.HostShim {
		return false, nil
	}
	keep := map[string]bool{}
	for _, v := range s.c.ValidAttachments {
		keep[strconv.Itoa(userMetric(s.c.Name, v.ContainerID, v.IfName))] = true
	}
	deleted, err := s.sh.release(l, except(keep))
	return !deleted, err
}

// shimRoutes are the host routes to each address via the shim, with the shim's address of
// the same family as source and metric as the user's mark. A family the shim has no
// address in gets none.
func shimRoutes(h netlinksafe.Handle, link netlink.Link, ips []net.IP, metric int) ([]*netlink.Route, error) {
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

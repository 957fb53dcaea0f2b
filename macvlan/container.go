package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// procSys is where the container's notify sysctls are written (inside its netns);
// sysctlMode is ignored for existing /proc/sys files but os.WriteFile wants one.
const (
	procSys    = "/proc/sys"
	sysctlMode = 0o644
)

// createMacvlan creates the container's macvlan on the master: from the host straight into
// the container's netns (IFLA_NET_NS_FD, named CNI_IFNAME there), or inside the container
// with linkInContainer (mh is then the container's handle). A link of that name already in
// the container is code 105; a master the kernel refuses is code 7 naming it.
func createMacvlan(mh, cont netlinksafe.Handle, containerNS int, c *conf, m *master, ifName string) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ifName
	attrs.ParentIndex = m.link.Attrs().Index
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
		return nil, plugins.InvalidField("master", m.name, fmt.Sprintf("the kernel refused a %s macvlan on it (a passthru macvlan must be the master's only macvlan; an ipvlan master takes none): %v", c.Mode, err))
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return nil, plugins.InvalidField("mac", c.MAC.String(), fmt.Sprintf("the kernel refused it: %v", err))
	default:
		return nil, fmt.Errorf("creating macvlan %s on %s: %w", ifName, m.name, err)
	}
	link, err := cont.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("looking up the new macvlan %s in the container: %w", ifName, err)
	}
	return link, nil
}

// deleteMacvlan deletes the container's interface when it is a macvlan (an interface of
// another kind by that name is not moor's). A netns or link that is gone is not an error.
func deleteMacvlan(netnsPath, ifName string) error {
	if netnsPath == "" {
		return nil
	}
	cont, nsh, err := plugins.NetlinkAt(netnsPath)
	if err != nil {
		if errors.Is(err, plugins.ErrNetnsGone) {
			return nil
		}
		return err
	}
	defer nsh.Close()
	defer cont.Close()
	link, err := cont.LinkByName(ifName)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s in the container: %w", ifName, err)
	}
	if _, ok := link.(*netlink.Macvlan); !ok {
		return nil
	}
	if err := cont.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
		return fmt.Errorf("deleting %s in the container: %w", ifName, err)
	}
	return nil
}

// configureContainer gives the container's link its addresses (IPv6 without DAD), turns
// on gratuitous ARP / unsolicited NA at link up (as the reference does, so the LAN learns a
// reused address's new MAC at once), brings it up and adds the routes.
func configureContainer(cont netlinksafe.Handle, netnsPath string, link netlink.Link, res *current.Result) error {
	name := link.Attrs().Name
	for _, ipc := range res.IPs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
		if ipc.Address.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := cont.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", addr.IPNet, name, err)
		}
	}
	if len(res.IPs) > 0 {
		if err := setNotify(netnsPath, name); err != nil {
			return err
		}
	}
	if err := cont.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	for _, r := range containerRoutes(res) {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &r.Dst, Gw: r.GW, Priority: r.Priority}
		if r.GW == nil {
			route.Scope = netlink.SCOPE_LINK
		}
		if err := cont.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding route %s via %v in the container: %w", r.Dst.String(), r.GW, err)
		}
	}
	return nil
}

// setNotify writes arp_notify and ndisc_notify of the link inside the container's netns
// (a /proc/sys/net file belongs to the netns of the thread that opens it). A missing file
// (IPv6 disabled) is skipped.
func setNotify(netnsPath, ifName string) error {
	return plugins.WithNetns(netnsPath, func(ns.NetNS) error {
		for _, p := range []string{"net/ipv4/conf/%s/arp_notify", "net/ipv6/conf/%s/ndisc_notify"} {
			path := filepath.Join(procSys, fmt.Sprintf(p, ifName))
			if err := os.WriteFile(path, []byte("1"), sysctlMode); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("setting %s: %w", path, err)
			}
		}
		return nil
	})
}

// containerRoutes are IPAM's routes, a route without gw going via its family's gateway
// (when IPAM gave one).
func containerRoutes(res *current.Result) []*types.Route {
	var out []*types.Route
	for _, r := range res.Routes {
		rr := *r
		if rr.GW == nil {
			rr.GW = gatewayOf(res, r.Dst.IP.To4() != nil)
		}
		out = append(out, &rr)
	}
	return out
}

func gatewayOf(res *current.Result, v4 bool) net.IP {
	for _, ipc := range res.IPs {
		if (ipc.Address.IP.To4() != nil) == v4 && ipc.Gateway != nil {
			return ipc.Gateway
		}
	}
	return nil
}

// Package containerif configures a container's interface once its driver has made it
// (veth end, macvlan, ipvlan...), the same way for every driver: the addresses, the link
// up, the routes; and checks it again for CHECK.
//
// The rules, which every driver gets:
//   - IPv6 addresses are added with IFA_F_NODAD unless Options.EnableDAD: the address is
//     usable at once, not seconds later, and IPAM already made it unique;
//   - an address or route that is already there (EEXIST) is not an error: a retried ADD,
//     or a route the kernel made from an address (a connected subnet), must not fail;
//   - a route without a gateway is link-scoped (the destination is on the link); a route
//     keeps IPAM's priority;
//   - Routes fills in a route without gw with the gateway of its family (the reference
//     plugins' behaviour, which runtimes expect);
//   - with Options.Notify, arp_notify (through netlink, else /proc/sys) and ndisc_notify
//     are turned on before the link goes up, so the LAN learns a reused address's new MAC at once (macvlan; a veth's peer is
//     the host's bridge, which learns from the first frame anyway);
//   - with Options.IPv6Off (see IPv6Off for when), disable_ipv6 is set before the link
//     goes up: an interface of an IPv4-only network has no IPv6 at all, not even the
//     kernel's link-local address, so it never sends duplicate address detection, MLD
//     reports or router solicitations (which a bridge floods to every port, and which
//     every other container on it had to receive), and a macvlan takes no SLAAC address
//     from the LAN's router advertisements (a way into a container that the network's
//     IPv4 firewall rules never see). Docker does the same for networks without --ipv6.
//     There is no setting to keep it: a network that carries IPv6 gives its IPAM an IPv6
//     range; one whose containers want IPv6 from elsewhere (a LAN's SLAAC) sets
//     net.ipv6.conf.<ifname>.disable_ipv6 back to 0 with the tuning plugin after this one
//     in the chain. A kernel without IPv6 (no /proc/sys/net/ipv6) is skipped silently.
//
// What it does not do: create or delete links (the drivers and package veth do), or
// touch the host's side.
package containerif

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
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
)

// procSys is where the interface's sysctls are written (inside the container's netns);
// sysctlMode is ignored for existing /proc/sys files but os.WriteFile wants one.
const (
	procSys    = "/proc/sys"
	sysctlMode = 0o644
)

// Options choose the per-driver parts of Configure.
type Options struct {
	// EnableDAD keeps duplicate address detection on IPv6 addresses.
	EnableDAD bool
	// Notify turns on gratuitous ARP and unsolicited neighbour advertisements at link up;
	// NetnsPath is then the container's netns.
	Notify    bool
	NetnsPath string
	// IPv6Off sets disable_ipv6 on the link before it goes up (NetnsPath is then the
	// container's netns); a link already up is left to its caller (BeforeUp).
	IPv6Off bool
	// Netns, when set, is an open fd of the container's netns (NetnsPath's), which a
	// caller that holds one passes to have the sysctls written from its own thread
	// (plugins.InNetnsHere) instead of through NetnsPath (plugins.WithNetns).
	Netns netns.NsHandle
}

// Configure gives link (in the container's namespace, through cont) its addresses,
// brings it up and adds routes.
func Configure(cont netlinksafe.Handle, link netlink.Link, ips []*current.IPConfig, routes []*types.Route, o Options) error {
	name := link.Attrs().Name
	for _, ipc := range ips {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
		if ipc.Address.IP.To4() == nil && !o.EnableDAD {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := cont.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding %s to %s: %w", addr.IPNet, name, err)
		}
	}
	up := link.Attrs().Flags&net.FlagUp != 0
	var files []string
	if o.Notify {
		for _, f := range notifyFiles(ips) {
			if f == arpNotify {
				// Through netlink when it can: no /proc/sys path lookup (see
				// plugins.SetIPv4Conf), before the link goes up.
				sent, err := plugins.SetIPv4Conf(cont, link.Attrs().Index, plugins.IPv4ConfARPNotify, 1)
				if err != nil {
					return fmt.Errorf("setting arp_notify on %s: %w", name, err)
				}
				if sent {
					continue
				}
			}
			files = append(files, f)
		}
	}
	if o.IPv6Off && !up {
		files = append(files, disableIPv6)
	}
	if err := writeSysctls(o, name, files); err != nil {
		return err
	}
	// A link that its caller brought up already (veth.Options.ContainerUp), as its flags
	// say, needs no second request.
	if !up {
		if err := cont.LinkSetUp(link); err != nil {
			return fmt.Errorf("setting %s up: %w", name, err)
		}
	}
	for _, r := range routes {
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

// The sysctls of the container's interface; %s is its name.
const (
	arpNotify   = "net/ipv4/conf/%s/arp_notify"
	ndiscNotify = "net/ipv6/conf/%s/ndisc_notify"
	disableIPv6 = "net/ipv6/conf/%s/disable_ipv6"
)

// notifyFiles are arp_notify (when ips has an IPv4 address) and ndisc_notify (when it has
// an IPv6 one): a family without an address gets nothing to announce, and each write is
// a path lookup whose cost grows with the number of network namespaces that have a link
// of the same name.
func notifyFiles(ips []*current.IPConfig) []string {
	var files []string
	v4, v6 := false, false
	for _, ipc := range ips {
		if ipc.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	if v4 {
		files = append(files, arpNotify)
	}
	if v6 {
		files = append(files, ndiscNotify)
	}
	return files
}

// IPv6Off reports whether a container interface with the addresses ips gets its IPv6
// turned off: when IPAM gave it addresses (ipamType is set) and none of them is IPv6.
// Without IPAM (an L2-only network) moor assigns no address of either family and so
// cannot tell which families the network carries: the user's own addressing, or a LAN
// router's SLAAC, may well be IPv6, which needs the link-local address, so IPv6 stays on
// (the reference plugins' behaviour).
func IPv6Off(ipamType string, ips []*current.IPConfig) bool {
	if ipamType == "" {
		return false
	}
	for _, ipc := range ips {
		if ipc.Address.IP.To4() == nil {
			return false
		}
	}
	return true
}

// DisableIPv6 sets disable_ipv6 on the interface ifName of the netns whose open fd is nsh;
// the interface must still be down for it to have sent nothing. One write, from the
// caller's own thread switched into the netns and back (plugins.InNetnsHere: no second
// thread, no reopening of the netns path); a kernel without IPv6 is not an error.
func DisableIPv6(nsh netns.NsHandle, ifName string) error {
	return writeSysctls(Options{Netns: nsh}, ifName, []string{disableIPv6})
}

// writeSysctls writes 1 into each of files (formatted with ifName) inside the container's
// netns (o.Netns, else o.NetnsPath), in one visit (a /proc/sys/net file belongs to the
// netns of the thread that opens it). A missing file (IPv6 disabled in the kernel) is
// skipped.
func writeSysctls(o Options, ifName string, files []string) error {
	if len(files) == 0 {
		return nil
	}
	write := func() error {
		for _, p := range files {
			path := filepath.Join(procSys, fmt.Sprintf(p, ifName))
			if err := os.WriteFile(path, []byte("1"), sysctlMode); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("setting %s: %w", path, err)
			}
		}
		return nil
	}
	if o.Netns > 0 {
		return plugins.InNetnsHere(o.Netns, write)
	}
	return plugins.WithNetns(o.NetnsPath, func(ns.NetNS) error { return write() })
}

// Routes are res's routes, a route without gw going via its family's gateway (when res
// has one).
func Routes(res *current.Result) []*types.Route {
	var out []*types.Route
	for _, r := range res.Routes {
		rr := *r
		if rr.GW == nil {
			rr.GW = Gateway(res, r.Dst.IP.To4() != nil)
		}
		out = append(out, &rr)
	}
	return out
}

// Gateway is the first gateway of res's addresses of one family (v4 or not), or nil.
func Gateway(res *current.Result, v4 bool) net.IP {
	for _, ipc := range res.IPs {
		if (ipc.Address.IP.To4() != nil) == v4 && ipc.Gateway != nil {
			return ipc.Gateway
		}
	}
	return nil
}

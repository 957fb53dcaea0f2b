package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// Design notes.
//
// Without "device", moor-host only makes sense when the runtime hands it the host's own
// network namespace (Docker's --network host): ADD changes nothing and reports the host's
// links that are up, their global addresses and the default routes. Any other netns is a
// config error (code 7) that says so, because there is nothing host mode could do there.
//
// With "device" (a link name or a MAC), ADD moves that host link into the container as
// CNI_IFNAME and carries its addresses and routes along (the kernel flushes them on a move).
// The link's original name is kept in its alias (IFLA_IFALIAS), so DEL can move it back
// under that name with its addresses, also after the netns is gone (the kernel returns
// physical links to the host namespace then; veths die with it). No state file is kept:
// GC has nothing to collect beyond what DEL does.
var plugin = plugins.Plugin{
	Name:   "moor-host",
	Add:    cmdAdd,
	Del:    cmdDel,
	Check:  cmdCheck,
	GC:     cmdGC,
	Status: cmdStatus,
}

type conf struct {
	plugins.NetConf
	Device string `json:"device,omitempty"`
}

func load(call *plugins.Call) (*conf, error) {
	var c conf
	if err := plugins.LoadConf(call, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func cmdAdd(call *plugins.Call) error {
	c, err := load(call)
	if err != nil {
		return err
	}
	own, err := plugins.IsOwnNetns(call.Netns)
	if err != nil {
		return err
	}
	if c.Device == "" {
		if !own {
			return plugins.InvalidField("CNI_NETNS", call.Netns, "moor-host without \"device\" is host networking: the container must share the host's network namespace (the runtime's --network host); to give a container its own link, set \"device\"")
		}
		res, err := hostResult(call.Netns)
		if err != nil {
			return err
		}
		return call.PrintResult(res)
	}
	if own {
		return plugins.InvalidField("CNI_NETNS", call.Netns, "moving \"device\" needs the container's own network namespace, not the host's")
	}
	res, err := moveIn(call, c.Device)
	if err != nil {
		return err
	}
	return call.PrintResult(res)
}

// hostResult reports the host's links that are up (not lo), their global addresses and
// the default routes, from the plugin's own (the host's) namespace.
func hostResult(netnsPath string) (*current.Result, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing host links: %w", err)
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		idx := len(res.Interfaces)
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: a.Name, Mac: a.HardwareAddr.String(), Mtu: a.MTU, Sandbox: netnsPath})
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", a.Name, err)
		}
		for _, addr := range addrs {
			if addr.Scope != int(netlink.SCOPE_UNIVERSE) {
				continue
			}
			i := idx
			res.IPs = append(res.IPs, &current.IPConfig{Interface: &i, Address: *addr.IPNet})
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && !isDefault(r.Dst) {
			continue
		}
		dst := defaultDst(r)
		res.Routes = append(res.Routes, &types.Route{Dst: dst, GW: r.Gw})
		for _, ip := range res.IPs {
			if ip.Gateway == nil && r.Gw != nil && ip.Address.Contains(r.Gw) {
				ip.Gateway = r.Gw
			}
		}
	}
	return res, nil
}

func isDefault(n *net.IPNet) bool { ones, _ := n.Mask.Size(); return ones == 0 }

func defaultDst(r netlink.Route) net.IPNet {
	if r.Dst != nil {
		return *r.Dst
	}
	if r.Family == netlink.FAMILY_V6 || (r.Gw != nil && r.Gw.To4() == nil) {
		return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

func cmdDel(call *plugins.Call) error {
	c, err := load(call)
	if err != nil {
		return err
	}
	if c.Device == "" {
		return nil // host mode changed nothing
	}
	err = moveOut(call, c.Device)
	if err != nil && !errors.Is(err, plugins.ErrNetnsGone) && call.Netns != "" {
		return err
	}
	return restoreOrphan(c.Device)
}

func cmdCheck(call *plugins.Call) error {
	c, err := load(call)
	if err != nil {
		return err
	}
	own, err := plugins.IsOwnNetns(call.Netns)
	if err != nil {
		return err
	}
	if c.Device == "" {
		if !own {
			return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: CNI_NETNS %q is not the host's network namespace", call.Netns))
		}
		return nil
	}
	return checkMoved(call, c)
}

func cmdGC(call *plugins.Call) error {
	_, err := load(call)
	return err
}

// cmdStatus is not ready (50) when the configured device is not in the host's namespace:
// missing, or held by a container (a device is exclusive, so another ADD cannot work).
func cmdStatus(call *plugins.Call) error {
	c, err := load(call)
	if err != nil {
		return err
	}
	if c.Device == "" {
		return nil
	}
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "netlink", err)
	}
	defer h.Close()
	if _, err := plugins.FindLink(h, c.Device); err != nil {
		return codes.New(codes.PluginNotAvailable, fmt.Sprintf("device %q is not present in the host's network namespace", c.Device))
	}
	return nil
}

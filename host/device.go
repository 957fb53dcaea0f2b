package main

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// linkState is what a move must carry: the kernel drops addresses and routes of a link
// that changes namespace.
type linkState struct {
	addrs  []netlink.Addr
	routes []netlink.Route
}

func readState(h netlinksafe.Handle, link netlink.Link) (linkState, error) {
	var st linkState
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return st, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue // the kernel makes these again
		}
		st.addrs = append(st.addrs, a)
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return st, fmt.Errorf("listing routes of %s: %w", link.Attrs().Name, err)
	}
	for _, r := range routes {
		if r.Protocol == netlink.RouteProtocol(2) /* kernel */ || r.Table != 254 {
			continue // connected routes come back with the addresses
		}
		st.routes = append(st.routes, r)
	}
	return st, nil
}

// apply sets the state on link (now in h's namespace) and brings it up.
func (st linkState) apply(h netlinksafe.Handle, link netlink.Link) error {
	for _, a := range st.addrs {
		a := a
		a.Label = ""
		if err := h.AddrReplace(link, &a); err != nil {
			return fmt.Errorf("adding address %s to %s: %w", a.IPNet, link.Attrs().Name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", link.Attrs().Name, err)
	}
	for _, r := range st.routes {
		r := r
		r.LinkIndex = link.Attrs().Index
		if err := h.RouteReplace(&r); err != nil {
			return fmt.Errorf("adding route %s to %s: %w", r.Dst, link.Attrs().Name, err)
		}
	}
	return nil
}

// moveIn moves the host link named by device into the container as CNI_IFNAME.
func moveIn(call *plugins.Call, device string) (*current.Result, error) {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	link, err := plugins.FindLink(host, device)
	if err != nil {
		return nil, plugins.InvalidField("device", device, "no such link in the host's network namespace")
	}
	if link.Attrs().Flags&net.FlagLoopback != 0 {
		return nil, plugins.InvalidField("device", device, "the loopback link cannot be moved")
	}
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	defer cont.Close()
	if _, err := cont.LinkByName(call.IfName); err == nil {
		return nil, codes.New(codes.InterfaceConflict, fmt.Sprintf("interface %q already exists in the container's network namespace", call.IfName))
	}
	st, err := readState(host, link)
	if err != nil {
		return nil, err
	}
	origName := link.Attrs().Name
	undo := plugins.NewUndo(call.Log)
	defer undo.Rollback()

	if err := host.LinkSetDown(link); err != nil {
		return nil, fmt.Errorf("setting %s down: %w", origName, err)
	}
	undo.Push("restore "+origName, func() error { return restoreInHost(host, origName, origName, st) })
	if err := host.LinkSetAlias(link, origName); err != nil {
		return nil, fmt.Errorf("recording the original name of %s: %w", origName, err)
	}
	if err := host.LinkSetNsFd(link, int(nsh)); err != nil {
		return nil, fmt.Errorf("moving %s into %s: %w", origName, call.Netns, err)
	}
	undo.Push("move "+origName+" back", func() error { return moveBack(cont, host, call.IfName, origName, nil) })
	if err := call.Fault("host/after-move"); err != nil {
		return nil, err
	}
	moved, err := cont.LinkByName(origName)
	if err != nil {
		return nil, fmt.Errorf("finding %s in the container: %w", origName, err)
	}
	if origName != call.IfName {
		if err := cont.LinkSetName(moved, call.IfName); err != nil {
			return nil, fmt.Errorf("renaming %s to %s: %w", origName, call.IfName, err)
		}
	}
	moved, err = cont.LinkByName(call.IfName)
	if err != nil {
		return nil, err
	}
	if err := st.apply(cont, moved); err != nil {
		return nil, err
	}
	undo.Commit()
	return deviceResult(call, moved, st), nil
}

func deviceResult(call *plugins.Call, link netlink.Link, st linkState) *current.Result {
	zero := 0
	a := link.Attrs()
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: a.Name, Mac: a.HardwareAddr.String(), Mtu: a.MTU, Sandbox: call.Netns}},
	}
	for _, addr := range st.addrs {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: &zero, Address: *addr.IPNet})
	}
	for _, r := range st.routes {
		res.Routes = append(res.Routes, &types.Route{Dst: defaultDst(r), GW: r.Gw})
	}
	return res
}

// moveBack moves CNI_IFNAME from the container to the host under its original name.
// afterMove (may be nil) runs once the link is in the host, before it gets its name and
// addresses back: DEL's fault point.
func moveBack(cont, host netlinksafe.Handle, ifName, origName string, afterMove func() error) error {
	link, err := cont.LinkByName(ifName)
	if err != nil && plugins.IsNotFound(err) && ifName != origName {
		// a rollback before the rename: the link still has its host name
		ifName = origName
		link, err = cont.LinkByName(origName)
	}
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil
		}
		return err
	}
	st, err := readState(cont, link)
	if err != nil {
		return err
	}
	if err := cont.LinkSetDown(link); err != nil {
		return err
	}
	// The plugin's main thread is locked and never leaves the host's namespace.
	hostNS, err := netns.Get()
	if err != nil {
		return fmt.Errorf("opening the host's network namespace: %w", err)
	}
	defer hostNS.Close()
	if err := cont.LinkSetNsFd(link, int(hostNS)); err != nil {
		return fmt.Errorf("moving %s back to the host: %w", ifName, err)
	}
	if afterMove != nil {
		if err := afterMove(); err != nil {
			return err
		}
	}
	return restoreInHost(host, ifName, origName, st)
}

// restoreInHost renames the host link called name to target (its original name), clears
// the alias and re-applies st.
func restoreInHost(host netlinksafe.Handle, name, target string, st linkState) error {
	link, err := host.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s in the host: %w", name, err)
	}
	if link.Attrs().Name != target {
		if err := host.LinkSetName(link, target); err != nil {
			return fmt.Errorf("renaming %s back to %s: %w", name, target, err)
		}
	}
	link, err = host.LinkByName(target)
	if err != nil {
		return err
	}
	_ = host.LinkSetAlias(link, "")
	return st.apply(host, link)
}

// moveOut moves the container's CNI_IFNAME back to the host. An ADD that died between
// moving device in and renaming it left it under its host name, which its alias repeats
// (moveIn sets the alias before the move): that link is moved back too.
func moveOut(call *plugins.Call, device string) error {
	if call.Netns == "" {
		return plugins.ErrNetnsGone
	}
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer host.Close()
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer cont.Close()
	link, err := cont.LinkByName(call.IfName)
	if err != nil {
		if !plugins.IsNotFound(err) {
			return err
		}
		link, err = plugins.FindLink(cont, device)
		if err != nil || link.Attrs().Alias != link.Attrs().Name {
			return nil // already gone: DEL is repeatable
		}
	}
	orig := link.Attrs().Alias
	if orig == "" {
		orig = call.IfName
	}
	return moveBack(cont, host, link.Attrs().Name, orig, func() error { return call.Fault("host/del-after-move") })
}

// restoreOrphan handles a link that came back to the host without its name: after the
// netns is gone (the kernel returns it under its container name) or after a DEL that died
// between moving it back and renaming it. It is found by its alias (its host name), or by
// MAC when device is one, and gets that name back. Its addresses went with the namespace
// move and the process that held them.
func restoreOrphan(device string) error {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer host.Close()
	links, err := host.LinkList()
	if err != nil {
		return err
	}
	mac, _ := net.ParseMAC(device)
	for _, l := range links {
		a := l.Attrs()
		if a.Alias == "" || a.Name == a.Alias || (a.Alias != device && (mac == nil || a.HardwareAddr.String() != mac.String())) {
			continue
		}
		if err := host.LinkSetName(l, a.Alias); err != nil {
			return fmt.Errorf("renaming %s back to %s: %w", a.Name, a.Alias, err)
		}
		_ = host.LinkSetAlias(l, "")
		return nil
	}
	return nil
}

func checkMoved(call *plugins.Call, c *conf) error {
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer cont.Close()
	link, err := cont.LinkByName(call.IfName)
	if err != nil {
		return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: %s not found in %s", call.IfName, call.Netns))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: %s is down", call.IfName))
	}
	if c.PrevResult == nil {
		return nil
	}
	addrs, err := cont.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, want := range c.PrevResult.IPs {
		found := false
		for _, a := range addrs {
			if a.IPNet.String() == want.Address.String() {
				found = true
			}
		}
		if !found {
			return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: address %s missing on %s", want.Address.String(), call.IfName))
		}
	}
	return nil
}

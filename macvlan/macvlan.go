package main

import (
	"context"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/link/shim"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

var plugin = plugins.Plugin{
	Name:   "moor-macvlan",
	Add:    cmdAdd,
	Del:    cmdDel,
	Check:  cmdCheck,
	GC:     cmdGC,
	Status: cmdStatus,
}

// handles are the netlink handles of one call: the host's, the container's, and the one
// of the namespace the master lives in (one of the two).
type handles struct {
	host, cont, master netlinksafe.Handle
	contNS             int // fd of the container's netns
	close              func()
}

func openHandles(call *plugins.Call, c *conf) (*handles, error) {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		host.Close()
		return nil, err
	}
	h := &handles{host: host, cont: cont, master: host, contNS: int(nsh)}
	if c.LinkInContainer {
		h.master = cont
	}
	h.close = func() { cont.Close(); nsh.Close(); host.Close() }
	return h, nil
}

func cmdAdd(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if err := call.RequireContainerNetns(); err != nil {
		return err
	}
	h, err := openHandles(call, c)
	if err != nil {
		return err
	}
	defer h.close()
	m, err := master.Resolve(h.master, c.masterSpec())
	if err != nil {
		return err
	}
	// Before anything is counted or created: a duplicate ADD must not touch what the live
	// attachment uses. Only a VLAN master counts its users (under the same key for a
	// duplicate, whose rollback would uncount the live one); without it the first thing
	// created is the macvlan, whose creation itself finds the name taken (EEXIST, code
	// 105 in createMacvlan), so no lookup is spent on the ADDs that succeed.
	if m.VLAN != nil {
		if _, err := h.cont.LinkByName(call.IfName); err == nil {
			return codes.New(codes.InterfaceConflict, fmt.Sprintf("interface %q already exists in the container's network namespace", call.IfName))
		}
	}

	undo := plugins.NewUndo(call.Log)
	defer undo.Rollback()

	// IPAM: moor-ipam's reservation returns once the addresses are decided and its store
	// commit (two fdatasyncs, mostly a wait for the disk) runs in a goroutine until
	// durable joins it, after the interface is configured. An IPAM that needs the link
	// (dhcp; any type moor does not know) runs after the link, as in the reference
	// plugin; moor-ipam needs nothing of it and reserves here, so that its commit runs
	// beside all of the link work. Errors keep the reference's order: a failing link
	// step reports its own error even when the reservation failed too.
	ctx := context.Background()
	var (
		ipamRes *current.Result
		durable func() error
		ipamErr error
	)
	reserve := func() {
		ipamRes, durable, ipamErr = ipamclient.ReserveDurableLater(ctx, call, c.IPAM.Type, undo, "macvlan/after-ipam")
	}
	early := ipamclient.Registered(c.IPAM.Type)
	if early {
		reserve()
	}

	if m.VLAN != nil {
		links := &sharedlink.Manager{H: h.master, LockDir: c.LockDir}
		if err := master.EnsureVLAN(links, m, master.VLANUser(c.Name, call.ContainerID, call.IfName), undo); err != nil {
			return err
		}
	}

	link, err := createMacvlan(h.master, h.cont, h.contNS, c, m, call.IfName)
	if err != nil {
		return err
	}
	undo.Push("delete macvlan "+call.IfName, func() error { return plugins.DeleteLinkByName(h.cont, call.IfName) })
	if err := tagMacvlan(h.cont, link, c.Name, call.ContainerID, call.IfName); err != nil {
		return err
	}
	if err := call.Fault("macvlan/after-link"); err != nil {
		return err
	}
	if err := shaping.AddContainer(call, h.cont, link, c.Name, c.Shaping, undo); err != nil {
		return err
	}
	if err := call.Fault("macvlan/after-shaping"); err != nil {
		return err
	}

	if !early {
		reserve()
	}
	if ipamErr != nil {
		return ipamErr
	}

	if c.HostShim {
		s := hostShim(h.host, call, c)
		s.Master, s.IPs = m.Link, resultIPs(ipamRes)
		if err := s.Attach(undo); err != nil {
			return err
		}
		if err := call.Fault("macvlan/after-shim"); err != nil {
			return err
		}
	}

	// One visit to the container's netns writes the notify sysctls and, on an IPv4-only
	// network, disable_ipv6 before the link goes up (no SLAAC from the LAN's routers).
	opts := containerif.Options{Notify: true, NetnsPath: call.Netns, Netns: netns.NsHandle(h.contNS), IPv6Off: containerif.IPv6Off(c.IPAM.Type, ipamRes.IPs)}
	if err := containerif.Configure(h.cont, link, ipamRes.IPs, containerif.Routes(ipamRes), opts); err != nil {
		return err
	}
	if err := durable(); err != nil {
		return err
	}
	if err := call.Fault("macvlan/after-addresses"); err != nil {
		return err
	}
	// link is the one looked up after its creation: what the result takes from it (name,
	// MAC, MTU) is fixed from then on, so it is not looked up again.
	res := buildResult(call, c, link, ipamRes)
	undo.Commit()
	return call.PrintResult(res)
}

// hostShim is the network's host shim for this call's attachment.
func hostShim(host netlinksafe.Handle, call *plugins.Call, c *conf) *shim.Shim {
	return &shim.Shim{Links: &sharedlink.Manager{H: host, LockDir: c.LockDir}, Call: call, Network: c.Name, IPAMType: c.IPAM.Type, Wanted: c.HostShim}
}

// resultIPs are the addresses of a result.
func resultIPs(res *current.Result) []net.IP {
	var out []net.IP
	for _, ipc := range res.IPs {
		out = append(out, ipc.Address.IP)
	}
	return out
}

// buildResult is the reference plugin's result: one interface (the container's link with
// its MAC and sandbox), every address on interface 0, IPAM's routes with their gateways
// filled in, and the config's dns (IPAM's when the config has none).
func buildResult(call *plugins.Call, c *conf, link netlink.Link, ipamRes *current.Result) *current.Result {
	a := link.Attrs()
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: a.Name, Mac: a.HardwareAddr.String(), Mtu: a.MTU, Sandbox: call.Netns}},
		Routes:     containerif.Routes(ipamRes),
		DNS:        c.DNS,
	}
	if len(c.DNS.Nameservers) == 0 && len(c.DNS.Search) == 0 && c.DNS.Domain == "" {
		res.DNS = ipamRes.DNS
	}
	for _, ipc := range ipamRes.IPs {
		ip := *ipc
		ip.Interface = current.Int(0)
		res.IPs = append(res.IPs, &ip)
	}
	return res
}

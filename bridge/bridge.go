package main

import (
	"context"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/ipamclient"
)

// Design notes.
//
// ADD does, in order, registering the undo of each step right after it: start reserving
// addresses (in process for moor-ipam: in a goroutine of its own, see ipamclient.Pending),
// ensure the bridge (create or reuse), create the veth pair with its container end
// straight in the container's netns and its host end enslaved and up in the same request,
// the port's flags, VLANs and shaping; then join the reservation, put the gateway on the
// bridge, configure the container end (addresses with IFA_F_NODAD unless enabledad, so no
// DAD wait; routes), then the firewall (network chains, then this attachment's published
// ports). Errors are reported as if the reservation still ran right after the bridge:
// when it and a later step before the join both fail, its error is the one reported. Any
// failure rolls all of it back (a reservation still under way is waited for and
// released); a bridge or network chains this ADD created are removed too.
//
// The host end carries an alternative name, "moor-" + a hash of network, container ID and
// ifname, so DEL finds it without the container's netns (LinkByName resolves altnames in
// O(1)) and GC finds the veths of attachments that no runtime holds any more.
//
// DEL leaves the bridge and the network's chains in place, like Docker and the reference
// plugin: the network outlives its containers. `moor network rm` removes them.
var plugin = plugins.Plugin{
	Name:   "moor-bridge",
	Add:    cmdAdd,
	Del:    cmdDel,
	Check:  cmdCheck,
	GC:     cmdGC,
	Status: cmdStatus,
}

func cmdAdd(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if err := call.RequireContainerNetns(); err != nil {
		return err
	}

	// The reservation runs beside everything up to the join (see ipamclient.Pending):
	// opening the handles, the bridge, the veth pair, the port's flags, VLANs and shaping.
	// A step that failed after the reservation's place in the sequence (after the bridge)
	// reports ipam.First(err): the IPAM error wins, as in an ADD that reserved first.
	ctx := context.Background()
	undo := plugins.NewUndo(call.Log)
	defer undo.Rollback() // when OpenHandles fails: releases what the reservation got
	ipam := ipamclient.Start(ctx, call, c.IPAM.Type, undo, "bridge/after-ipam")
	handles, err := call.OpenHandles()
	if err != nil {
		return err
	}
	defer handles.Close()
	defer undo.Rollback() // runs first, while the handles are still open; the one above is then a no-op
	host, cont, nsh := handles.Host, handles.Container, handles.ContainerNS

	br, created, err := ensureBridge(host, c)
	if created {
		undo.Push("delete bridge "+c.BrName, func() error { return plugins.DeleteLinkByName(host, c.BrName) })
	}
	if err != nil {
		return err
	}

	pair, err := veth.CreatePair(host, cont, veth.Options{
		ContainerName: call.IfName,
		ContainerNS:   int(nsh),
		MTU:           vethMTU(c, br),
		ContainerMAC:  c.MAC,
		HostAltName:   veth.Bridge.AltName(c.Name, call.ContainerID, call.IfName),
		Master:        br,
		Network:       c.Name,
		// A shaped host end stays down until its qdiscs are on: shaping.AddHost brings it up.
		HostUp:      c.Shaping == nil,
		ContainerUp: !c.DisableContainerInterface,
		// An IPv4-only network's container end never speaks IPv6 (containerif.IPv6Off):
		// which families the network has is the reservation's answer, joined here, before
		// the end first goes up (the reservation still runs beside the pair's creation).
		BeforeContainerUp: func() error {
			res, err := ipam.Wait()
			if err != nil || !containerif.IPv6Off(c.IPAM.Type, res.IPs) {
				return err
			}
			return containerif.DisableIPv6(nsh, call.IfName)
		},
	})
	if err != nil {
		return ipam.First(err)
	}
	hostVeth := pair.Host
	hostName := hostVeth.Attrs().Name
	undo.Push("delete veth "+hostName, func() error { return plugins.DeleteLinkByName(host, hostName) })
	if err := call.Fault("bridge/after-veth"); err != nil {
		return ipam.First(err)
	}
	if err := setPortFlags(host, hostVeth, c, undo); err != nil {
		return ipam.First(err)
	}
	if err := setupPortVlans(host, br, hostVeth, c, undo); err != nil {
		return ipam.First(err)
	}
	if err := shaping.AddHost(call, host, hostVeth, c.Name, c.Shaping, undo); err != nil {
		return ipam.First(err)
	}
	if err := call.Fault("bridge/after-shaping"); err != nil {
		return ipam.First(err)
	}
	ipamRes, err := ipam.Wait()
	if err != nil {
		return err
	}
	if c.IsGW {
		if err := setGateways(host, br, c, ipamRes, undo); err != nil {
			return err
		}
	}
	contLink := pair.Container // looked up when it was brought up
	if contLink == nil {
		if contLink, err = cont.LinkByName(call.IfName); err != nil {
			return fmt.Errorf("finding %s in the container: %w", call.IfName, err)
		}
	}
	if !c.DisableContainerInterface {
		if err := containerif.Configure(cont, contLink, ipamRes.IPs, containerRoutes(c, ipamRes), containerif.Options{EnableDAD: c.EnableDad}); err != nil {
			return err
		}
	}
	if err := call.Fault("bridge/after-addresses"); err != nil {
		return err
	}
	if c.MacSpoofChk {
		if err := setupMacSpoof(call, c, hostName, contLink.Attrs().HardwareAddr, undo); err != nil {
			return err
		}
	}
	if err := setupFirewall(call, c, ipamRes, created, undo); err != nil {
		return err
	}
	if err := call.Fault("bridge/after-firewall"); err != nil {
		return err
	}

	res := buildResult(call, br, hostVeth, contLink, ipamRes, c)
	undo.Commit()
	return call.PrintResult(res)
}

// vethMTU is the configured MTU, else the bridge's: a new bridge was created with the
// default-route link's MTU (ensureBridge), so only its creation pays the route lookup.
func vethMTU(c *conf, br netlink.Link) int {
	if c.MTU != 0 {
		return c.MTU
	}
	return br.Attrs().MTU
}

// setGateways puts the gateway of every IPAM address on the bridge. (Forwarding is turned
// on with the firewall's sysctls.)
func setGateways(host netlinksafe.Handle, br netlink.Link, c *conf, res *current.Result, undo *plugins.Undo) error {
	for _, ipc := range res.IPs {
		if !c.gatewayOnBridge(ipc) {
			continue
		}
		gw := &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
		added, err := ensureGatewayAddr(host, br, gw, c.ForceAddress)
		if err != nil {
			return err
		}
		if added {
			undo.Push("remove gateway "+gw.String(), func() error {
				err := host.AddrDel(br, &netlink.Addr{IPNet: gw})
				if plugins.IsNotFound(err) || err == unix.EADDRNOTAVAIL {
					return nil
				}
				return err
			})
		}
	}
	return nil
}

// setPortFlags applies hairpin (asked for, or needed by published ports so a container
// can reach itself through its own host port), port isolation on the bridge port when
// asked for, and what icc false needs of the bridge (firewall.NoICCBridge: br_netfilter
// for the bridge, or isolated ports where the kernel has no br_netfilter).
func setPortFlags(host netlinksafe.Handle, port netlink.Link, c *conf, undo *plugins.Undo) error {
	if c.HairpinMode || len(c.RuntimeConfig.PortMappings) > 0 {
		if err := host.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("setting hairpin on %s: %w", port.Attrs().Name, err)
		}
	}
	isolate := c.PortIsolation
	if !c.icc() {
		iso, unset, err := firewall.NoICCBridge(nil, c.BrName)
		if unset != nil {
			undo.Push("turn br_netfilter off for bridge "+c.BrName, unset)
		}
		if err != nil {
			return err
		}
		isolate = isolate || iso
	}
	if isolate {
		if err := host.LinkSetIsolated(port, true); err != nil {
			return fmt.Errorf("setting port isolation on %s: %w", port.Attrs().Name, err)
		}
	}
	return nil
}

// containerRoutes are IPAM's routes (a route without gw goes via the gateway of its
// family) plus, with isDefaultGateway, a default route per family via its gateway.
func containerRoutes(c *conf, res *current.Result) []*types.Route {
	out := containerif.Routes(res)
	hasDefault := map[bool]bool{}
	for _, r := range out {
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			hasDefault[r.Dst.IP.To4() != nil] = true
		}
	}
	if c.IsDefaultGW {
		for _, v4 := range []bool{true, false} {
			gw := containerif.Gateway(res, v4)
			if gw == nil || hasDefault[v4] {
				continue
			}
			dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
			if !v4 {
				dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
			out = append(out, &types.Route{Dst: dst, GW: gw})
		}
	}
	return out
}

func buildResult(call *plugins.Call, br, hostVeth, contLink netlink.Link, ipamRes *current.Result, c *conf) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
			{Name: hostVeth.Attrs().Name, Mac: hostVeth.Attrs().HardwareAddr.String()},
			{Name: contLink.Attrs().Name, Mac: contLink.Attrs().HardwareAddr.String(), Mtu: contLink.Attrs().MTU, Sandbox: call.Netns},
		},
		DNS: ipamRes.DNS,
	}
	const containerIndex = 2
	for _, ipc := range ipamRes.IPs {
		ip := *ipc
		idx := containerIndex
		ip.Interface = &idx
		res.IPs = append(res.IPs, &ip)
	}
	res.Routes = containerRoutes(c, ipamRes)
	return res
}

package main

import (
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
)

// attachment is what attach made.
type attachment struct {
	bridge   netlink.Link
	hostVeth netlink.Link
	cont     netlink.Link
}

// attach creates the veth pair (container end straight in the container's netns, host end
// on the bridge, up) and sets the container end's addresses and routes. When it fails after
// the veth exists, att.hostVeth is set so the caller can delete it.
func attach(host, cont netlinksafe.Handle, nsFd int, call *plugins.Call, c *netconf.Conf, mtu int, res *current.Result) (attachment, error) {
	var att attachment
	br, err := host.LinkByName(c.Bridge)
	if err != nil {
		return att, fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	att.bridge = br
	att.hostVeth, err = veth.Create(host, cont, veth.Options{
		HostPrefix:    "vov",
		ContainerName: call.IfName,
		ContainerNS:   nsFd,
		MTU:           mtu,
		ContainerMAC:  c.MAC,
		HostAltName:   veth.Overlay.AltName(c.Name, call.ContainerID, call.IfName),
		Master:        br,
		Network:       c.Name,
		// A shaped host end stays down until its qdiscs are on: shaping.AddHost brings it up.
		HostUp: c.Shaping == nil,
	})
	if err != nil {
		return att, err
	}
	link, err := cont.LinkByName(call.IfName)
	if err != nil {
		return att, fmt.Errorf("finding %s in the container: %w", call.IfName, err)
	}
	// The overlay's IPAM gives IPv4 only: its container ends never speak IPv6.
	o := containerif.Options{NetnsPath: call.Netns, IPv6Off: containerif.IPv6Off(netconf.MoorIPAM, res.IPs)}
	if err := containerif.Configure(cont, link, res.IPs, res.Routes, o); err != nil {
		return att, err
	}
	if att.cont, err = cont.LinkByName(call.IfName); err != nil {
		return att, err
	}
	return att, nil
}

// containerIndex is the container interface's index in the result's interfaces.
const containerIndex = 2

func buildResult(call *plugins.Call, att attachment, ipamRes *current.Result) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: att.bridge.Attrs().Name, Mac: att.bridge.Attrs().HardwareAddr.String()},
			{Name: att.hostVeth.Attrs().Name, Mac: att.hostVeth.Attrs().HardwareAddr.String()},
			{Name: att.cont.Attrs().Name, Mac: att.cont.Attrs().HardwareAddr.String(), Mtu: att.cont.Attrs().MTU, Sandbox: call.Netns},
		},
		Routes: ipamRes.Routes,
		DNS:    ipamRes.DNS,
	}
	for _, ipc := range ipamRes.IPs {
		ip := *ipc
		idx := containerIndex
		ip.Interface = &idx
		res.IPs = append(res.IPs, &ip)
	}
	return res
}

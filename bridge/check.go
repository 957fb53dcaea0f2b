package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdCheck compares the live state with the cached result (prevResult) and names every
// difference: bridge, host veth and its bridge membership, the container interface, its
// MAC, addresses and routes, the reservation, and the firewall rules.
func cmdCheck(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return plugins.InvalidField("prevResult", "", "CHECK needs the result of the ADD")
	}
	var problems []string
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	problems = append(problems, checkHost(host, call, c)...)
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer cont.Close()
	problems = append(problems, checkContainer(cont, call, c)...)
	if c.IPAM.Type != "" {
		if err := ipamclient.Check(context.Background(), call, c.IPAM.Type); err != nil {
			problems = append(problems, "addresses: "+err.Error())
		}
	}
	if c.MacSpoofChk {
		if err := firewall.CheckMacSpoof(firewall.Options{}, c.Name, call.ContainerID, call.IfName); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(c.PrevResult.IPs) > 0 {
		if fw, err := openFirewall(c); err != nil {
			problems = append(problems, "firewall: "+err.Error())
		} else {
			if err := fw.CheckNetwork(fwNetwork(c, c.PrevResult)); err != nil {
				problems = append(problems, err.Error())
			}
			if a := fwAttachment(call, c, c.PrevResult); len(a.Ports) > 0 {
				if err := fw.CheckAttachment(fwNetwork(c, c.PrevResult), a); err != nil {
					problems = append(problems, err.Error())
				}
			}
		}
	}
	if len(problems) > 0 {
		return codes.New(codes.CheckFailed, "CHECK: "+strings.Join(problems, "; "))
	}
	return nil
}

func checkHost(host netlinksafe.Handle, call *plugins.Call, c *conf) []string {
	var problems []string
	br, err := host.LinkByName(c.BrName)
	if err != nil {
		return []string{fmt.Sprintf("bridge %s is missing", c.BrName)}
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		problems = append(problems, fmt.Sprintf("%s is a %s, not a bridge", c.BrName, br.Type()))
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("bridge %s is down", c.BrName))
	}
	veth, err := host.LinkByName(hostAltName(c.Name, call.ContainerID, call.IfName))
	if err != nil {
		return append(problems, "the host end of the veth is missing")
	}
	if veth.Attrs().MasterIndex != br.Attrs().Index {
		problems = append(problems, fmt.Sprintf("host veth %s is not a port of %s", veth.Attrs().Name, c.BrName))
	}
	return problems
}

func checkContainer(cont netlinksafe.Handle, call *plugins.Call, c *conf) []string {
	link, err := cont.LinkByName(call.IfName)
	if err != nil {
		return []string{fmt.Sprintf("interface %s is missing in the container", call.IfName)}
	}
	var problems []string
	if want := resultMAC(c.PrevResult, call.IfName); want != "" && !strings.EqualFold(want, link.Attrs().HardwareAddr.String()) {
		problems = append(problems, fmt.Sprintf("%s has MAC %s, the result says %s", call.IfName, link.Attrs().HardwareAddr, want))
	}
	if c.DisableContainerInterface {
		return problems
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("%s is down", call.IfName))
	}
	addrs, err := cont.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(problems, err.Error())
	}
	have := map[string]bool{}
	for _, a := range addrs {
		have[a.IPNet.String()] = true
	}
	for _, ipc := range c.PrevResult.IPs {
		if !have[ipc.Address.String()] {
			problems = append(problems, fmt.Sprintf("address %s is missing on %s", ipc.Address.String(), call.IfName))
		}
	}
	routes, err := cont.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(problems, err.Error())
	}
	for _, want := range c.PrevResult.Routes {
		found := false
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == want.Dst.String() && (want.GW == nil || want.GW.Equal(r.Gw)) {
				found = true
				break
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("route %s via %s is missing", want.Dst.String(), want.GW))
		}
	}
	return problems
}

func resultMAC(res *current.Result, ifName string) string {
	for _, i := range res.Interfaces {
		if i.Name == ifName && i.Sandbox != "" {
			return i.Mac
		}
	}
	return ""
}

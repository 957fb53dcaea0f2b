package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdCheck compares the live state with the cached result (prevResult) and names every
// difference: bridge, host veth and its bridge membership, what icc false needs of the
// bridge or the port, the container interface, its
// MAC, addresses and routes, the reservation, and the firewall rules.
func cmdCheck(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if err := c.RequirePrevResult(); err != nil {
		return err
	}
	var problems []string
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
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
	problems = append(problems, containerif.Check(cont, call.IfName, c.PrevResult, c.DisableContainerInterface)...)
	if c.IPAM.Type != "" {
		if err := ipamclient.Check(context.Background(), call, c.IPAM.Type); err != nil {
			problems = append(problems, "addresses: "+err.Error())
		}
	}
	if c.MacSpoofChk {
		if err := firewall.CheckMacSpoof(firewall.Options{LockFile: c.fwLock}, c.Name, call.ContainerID, call.IfName); err != nil {
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
			if a, err := fwAttachment(call, c, c.PrevResult); err != nil {
				problems = append(problems, err.Error())
			} else if len(a.Ports) > 0 {
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
	port, p := veth.Bridge.CheckPort(host, br, c.Name, call.ContainerID, call.IfName)
	problems = append(problems, p...)
	if port == nil {
		return problems
	}
	problems = append(problems, shaping.CheckHost(call, host, port, c.Name, c.Shaping)...)
	if !c.icc() {
		p, err := firewall.CheckNoICCBridge(nil, c.BrName, port.Attrs().Name)
		if err != nil {
			p = append(p, err.Error())
		}
		problems = append(problems, p...)
	}
	return append(problems, checkVlans(host, br, port, c)...)
}

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/overlay/masq"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdCheck compares the live state with the cached result and the store, naming every
// difference: the host's lease (it must still hold the subnet of the container's address),
// the VXLAN device and bridge, every other host's route, neighbour and FDB entry, the host
// veth on the bridge, the icc false and internal rules, the container's interface, MAC, addresses and routes, and the
// reservation. An unreachable store is code 11.
func cmdCheck(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	if err := c.RequirePrevResult(); err != nil {
		return err
	}
	hs, err := call.OpenHandles()
	if err != nil {
		return err
	}
	defer hs.Close()
	host, err := openHost(c, hs.Host)
	if err != nil {
		return err
	}
	defer host.Close()
	ctx := context.Background()
	leases, _, err := host.reg.List(ctx)
	if err != nil {
		return err
	}
	var problems []string
	var own *lease.Lease
	for i := range leases {
		if leases[i].HostID == host.hostID {
			own = &leases[i]
		}
	}
	if own == nil {
		problems = append(problems, fmt.Sprintf("host %s holds no lease on network %s", host.hostID, c.Name))
	} else {
		for _, ipc := range c.PrevResult.IPs {
			if !own.Subnet.Contains(addrOf(ipc.Address.IP)) {
				problems = append(problems, fmt.Sprintf("address %s is outside the host's subnet %s", ipc.Address.IP, own.Subnet))
			}
		}
		problems = append(problems, checkPlane(host, c, *own, leases)...)
	}
	problems = append(problems, checkVeth(host.h, call, c)...)
	if c.NoICC() {
		if ok, err := masq.PresentNoICC(0, hostnet.NoICCRule(c)); err != nil || !ok {
			problems = append(problems, fmt.Sprintf("icc false: the forward rule of %s in table ip %s is missing or changed (%v)", c.Name, masq.TableName, err))
		}
	}
	if c.Internal {
		if ok, err := masq.PresentInternal(0, hostnet.InternalRule(c)); err != nil || !ok {
			problems = append(problems, fmt.Sprintf("internal: the forward rules of %s in table ip %s are missing or changed (%v)", c.Name, masq.TableName, err))
		}
	}
	problems = append(problems, containerif.Check(hs.Container, call.IfName, c.PrevResult, false)...)
	id, err := ipamHostID(c)
	var icall *plugins.Call
	if err == nil {
		icall, err = ipamCall(call, c, subnetOf(own), id)
	}
	if err == nil {
		err = ipamclient.Check(ctx, icall, netconf.MoorIPAM)
	}
	if err != nil {
		problems = append(problems, "addresses: "+err.Error())
	}
	if len(problems) > 0 {
		return codes.New(codes.CheckFailed, "CHECK: "+strings.Join(problems, "; "))
	}
	return nil
}

// subnetOf is the lease's subnet, or the zero prefix without a lease.
func subnetOf(l *lease.Lease) netip.Prefix {
	if l == nil {
		return netip.Prefix{}
	}
	return l.Subnet
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func checkPlane(host *hostSide, c *netconf.Conf, own lease.Lease, leases []lease.Lease) []string {
	u, err := dataplane.ResolveUnderlay(host.h, c.Underlay)
	if err != nil {
		return []string{"underlay: " + err.Error()}
	}
	plane, err := hostnet.Plane(c, hostnet.Host{Handle: host.h}, own, u)
	if err != nil {
		return []string{"data plane: " + err.Error()}
	}
	missing, err := plane.Missing(dataplane.Peers(leases, host.hostID))
	if err != nil {
		return []string{err.Error()}
	}
	for i := range missing {
		missing[i] = "missing " + missing[i]
	}
	return missing
}

func checkVeth(h netlinksafe.Handle, call *plugins.Call, c *netconf.Conf) []string {
	br, err := h.LinkByName(c.Bridge)
	if err != nil {
		return []string{fmt.Sprintf("bridge %s is missing", c.Bridge)}
	}
	port, problems := veth.Overlay.CheckPort(h, br, c.Name, call.ContainerID, call.IfName)
	if port == nil {
		return problems
	}
	return append(problems, shaping.CheckHost(call, h, port, c.Name, c.Shaping)...)
}

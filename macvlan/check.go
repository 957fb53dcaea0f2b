package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/containerif"
	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/shim"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdCheck compares the live state with the cached result (prevResult) and names every
// difference (code 110): the master, the container link's kind, mode, parent, MAC, MTU,
// state, addresses and routes, the reservation, and the host shim with its routes.
func cmdCheck(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if err := c.RequirePrevResult(); err != nil {
		return err
	}
	want := resultInterface(c.PrevResult, call.IfName)
	if want == nil {
		return plugins.InvalidField("prevResult", call.IfName, "the result has no interface of that name")
	}
	if want.Sandbox != call.Netns {
		return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: the result puts %s in %s, CNI_NETNS is %s", call.IfName, want.Sandbox, call.Netns))
	}
	h, err := openHandles(call, c)
	if err != nil {
		return err // a vanished netns is code 3, as in every plugin (plugins.ErrNetnsGone)
	}
	defer h.close()
	var problems []string
	masterLink, p := checkMasterLive(h.master, c)
	problems = append(problems, p...)
	problems = append(problems, checkLink(h.cont, call, c, want, masterLink)...)
	if c.HostShim {
		problems = append(problems, shim.Check(h.host, c.Name, call.ContainerID, call.IfName, resultIPs(c.PrevResult))...)
	}
	if c.IPAM.Type != "" {
		if err := ipamclient.Check(context.Background(), call, c.IPAM.Type); err != nil {
			problems = append(problems, "addresses: "+err.Error())
		}
	}
	if len(problems) > 0 {
		return codes.New(codes.CheckFailed, "CHECK: "+strings.Join(problems, "; "))
	}
	return nil
}

func resultInterface(res *current.Result, ifName string) *current.Interface {
	for _, i := range res.Interfaces {
		if i.Name == ifName && i.Sandbox != "" {
			return i
		}
	}
	return nil
}

// checkMasterLive returns the master when it exists, and the problems with it.
func checkMasterLive(h netlinksafe.Handle, c *conf) (netlink.Link, []string) {
	name, err := master.Name(h, c.masterSpec())
	if err != nil {
		return nil, []string{err.Error()}
	}
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, []string{fmt.Sprintf("master %s is missing", name)}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return link, []string{fmt.Sprintf("master %s is down", name)}
	}
	return link, nil
}

func checkLink(cont netlinksafe.Handle, call *plugins.Call, c *conf, want *current.Interface, master netlink.Link) []string {
	name := call.IfName
	link, err := cont.LinkByName(name)
	if err != nil {
		return []string{fmt.Sprintf("interface %s is missing in the container", name)}
	}
	mv, ok := link.(*netlink.Macvlan)
	if !ok {
		return []string{fmt.Sprintf("%s is a %s, not a macvlan", name, link.Type())}
	}
	var problems []string
	a := mv.Attrs()
	if mv.Mode != c.mode {
		problems = append(problems, fmt.Sprintf("%s has mode %s, the config says %s", name, modeName(mv.Mode), c.Mode))
	}
	if master != nil && a.ParentIndex != master.Attrs().Index {
		problems = append(problems, fmt.Sprintf("%s is not a macvlan of master %s", name, master.Attrs().Name))
	}
	if want.Mtu != 0 && want.Mtu != a.MTU {
		problems = append(problems, fmt.Sprintf("%s has MTU %d, the result says %d", name, a.MTU, want.Mtu))
	}
	problems = append(problems, shaping.CheckContainer(call, cont, link, c.Name, c.Shaping)...)
	// MAC, state, addresses and routes: as every driver checks them.
	return append(problems, containerif.Check(cont, name, c.PrevResult, false)...)
}

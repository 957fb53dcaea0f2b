package main

import (
	"errors"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// The none driver keeps no state: ADD brings lo up in the container, DEL sets it down. GC
// therefore has nothing to collect, and STATUS is always ready.
var plugin = plugins.Plugin{
	Name:   "moor-none",
	Add:    cmdAdd,
	Del:    cmdDel,
	Check:  cmdCheck,
	GC:     cmdGC,
	Status: cmdStatus,
}

const loopback = "lo"

type conf struct {
	plugins.NetConf
}

func cmdAdd(call *plugins.Call) error {
	var c conf
	if err := plugins.LoadConf(call, &c); err != nil {
		return err
	}
	if err := call.RequireContainerNetns(); err != nil {
		return err
	}
	if err := setLoopback(call.Netns, true); err != nil {
		return err
	}
	return call.PrintResult(loopbackResult(call.Netns))
}

// loopbackResult is what the reference loopback plugin reports: lo with its addresses.
func loopbackResult(netns string) *current.Result {
	zero := 0
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: loopback, Mac: "00:00:00:00:00:00", Sandbox: netns}},
		IPs: []*current.IPConfig{
			{Interface: &zero, Address: net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}},
			{Interface: &zero, Address: net.IPNet{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)}},
		},
	}
}

func setLoopback(netnsPath string, up bool) error {
	h, nsh, err := plugins.NetlinkAt(netnsPath)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	lo, err := h.LinkByName(loopback)
	if err != nil {
		return fmt.Errorf("finding lo in %s: %w", netnsPath, err)
	}
	if up {
		err = h.LinkSetUp(lo)
	} else {
		err = h.LinkSetDown(lo)
	}
	if err != nil {
		return fmt.Errorf("setting lo up=%v in %s: %w", up, netnsPath, err)
	}
	return nil
}

func cmdDel(call *plugins.Call) error {
	var c conf
	if err := plugins.LoadConf(call, &c); err != nil {
		return err
	}
	if call.Netns == "" {
		return nil
	}
	err := setLoopback(call.Netns, false)
	if errors.Is(err, plugins.ErrNetnsGone) {
		return nil
	}
	return err
}

func cmdCheck(call *plugins.Call) error {
	var c conf
	if err := plugins.LoadConf(call, &c); err != nil {
		return err
	}
	h, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	lo, err := h.LinkByName(loopback)
	if err != nil {
		return plugins.Errorf(codes.CheckFailed, "CHECK: lo not found in %s: %w", call.Netns, err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: lo is down in %s", call.Netns))
	}
	addrs, err := h.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("CHECK: listing lo addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.IsLoopback() {
			return nil
		}
	}
	return codes.New(codes.CheckFailed, fmt.Sprintf("CHECK: lo in %s has no 127.0.0.1", call.Netns))
}

func cmdGC(call *plugins.Call) error {
	var c conf
	return plugins.LoadConf(call, &c) // no state, nothing to collect
}

func cmdStatus(call *plugins.Call) error {
	var c conf
	return plugins.LoadConf(call, &c)
}

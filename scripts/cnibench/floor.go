package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// macvlanParent is the veth in the private host netns that macvlan suites hang off (the
// stand-in for a NIC); macvlanPeer is its other end, kept there too.
const (
	macvlanParent = "moorbmvp0"
	macvlanPeer   = "moorbmvp1"
	floorVethFmt  = "moorbv%d" // host end of container i's veth in the floor suite
	gatewayOffset = 1          // the gateway is the subnet's first address
	firstCtrIndex = 2          // container i gets the subnet's address number i+2
	prefixLen     = 16
)

// floorDriver does, in process, the kernel work of a bridge ADD: the veth created with
// its peer straight in the container netns; IPv6 turned off on the peer before it goes
// up (the run's network is IPv4-only, and moor's drivers do so there: no link-local
// address, DAD, MLD or router solicitation); address, link up and default route inside;
// the host end put on the bridge and up. DEL deletes the veth. Addresses are computed,
// not allocated: there is no IPAM here.
type floorDriver struct {
	bridge netlink.Link
	gw     net.IP
}

// startFloor creates the bridge with the gateway address in the run's host netns.
func startFloor(env *runEnv) (driver, error) {
	d := &floorDriver{gw: nthAddr(gatewayOffset)}
	err := env.host.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("adding bridge %s: %w", bridgeName, err)
		}
		l, err := netlinksafe.LinkByName(bridgeName)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: d.gw, Mask: net.CIDRMask(prefixLen, 32)}}); err != nil {
			return err
		}
		d.bridge = l
		return netlink.LinkSetUp(l)
	})
	return d, err
}

// nthAddr is the subnet's address number n.
func nthAddr(n int) net.IP {
	_, ipn, _ := net.ParseCIDR(subnet)
	v := binary.BigEndian.Uint32(ipn.IP.To4()) + uint32(n)
	ip := make(net.IP, net.IPv4len)
	binary.BigEndian.PutUint32(ip, v)
	return ip
}

func (d *floorDriver) add(_ context.Context, i int, ctr ns.NetNS) (sample, error) {
	return threadTimed(func() error { return d.attach(i, ctr) })
}

// threadTimed times fn and measures its CPU with RUSAGE_THREAD: callers run on a thread
// locked by ns.Do, so the delta is fn's own (kernel work done in its syscalls included).
func threadTimed(fn func() error) (sample, error) {
	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &before)
	start := time.Now()
	err := fn()
	s := sample{Dur: time.Since(start), MaxRSS: -1}
	if unix.Getrusage(unix.RUSAGE_THREAD, &after) == nil {
		s.CPU = time.Duration(after.Utime.Nano() - before.Utime.Nano() + after.Stime.Nano() - before.Stime.Nano())
	}
	return s, err
}

func (d *floorDriver) attach(i int, ctr ns.NetNS) error {
	nsh, err := netns.GetFromPath(ctr.Path())
	if err != nil {
		return err
	}
	defer nsh.Close()
	in, err := netlinksafe.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer in.Close()

	hostName := fmt.Sprintf(floorVethFmt, i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: ifName, PeerNamespace: netlink.NsFd(int(nsh))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s: %w", hostName, err)
	}
	peer, err := in.LinkByName(ifName)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: nthAddr(firstCtrIndex + i), Mask: net.CIDRMask(prefixLen, 32)}}
	if err := in.AddrAdd(peer, addr); err != nil {
		return err
	}
	if err := disableIPv6(nsh); err != nil {
		return err
	}
	if err := in.LinkSetUp(peer); err != nil {
		return err
	}
	if err := in.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: d.gw}); err != nil {
		return err
	}
	hostEnd, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMasterByIndex(hostEnd, d.bridge.Attrs().Index); err != nil {
		return err
	}
	return netlink.LinkSetUp(hostEnd)
}

// disableIPv6 writes disable_ipv6 of the container's interface inside its netns, from
// this thread (locked by ns.Do: threadTimed counts the work, as an ADD's CPU does), then
// returns the thread to the namespace it was in. A kernel without IPv6 has nothing to
// turn off.
func disableIPv6(ctr netns.NsHandle) error {
	back, err := netns.Get()
	if err != nil {
		return err
	}
	defer back.Close()
	if err := netns.Set(ctr); err != nil {
		return fmt.Errorf("entering the container's netns: %w", err)
	}
	werr := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifName+"/disable_ipv6", []byte("1"), 0o644)
	if err := netns.Set(back); err != nil {
		return fmt.Errorf("returning from the container's netns: %w", err)
	}
	if werr != nil && !errors.Is(werr, os.ErrNotExist) {
		return werr
	}
	return nil
}

func (d *floorDriver) del(_ context.Context, i int, _ ns.NetNS) (sample, error) {
	return threadTimed(func() error {
		l, err := netlinksafe.LinkByName(fmt.Sprintf(floorVethFmt, i))
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
}

// withParent wraps a suite start func: it first creates the macvlan parent (a veth pair,
// both ends up) in the run's host netns.
func withParent(start func(*runEnv) (driver, error)) func(*runEnv) (driver, error) {
	return func(env *runEnv) (driver, error) {
		err := env.host.Do(func(ns.NetNS) error {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: macvlanParent}, PeerName: macvlanPeer}); err != nil {
				return fmt.Errorf("adding macvlan parent %s: %w", macvlanParent, err)
			}
			for _, name := range []string{macvlanParent, macvlanPeer} {
				l, err := netlinksafe.LinkByName(name)
				if err != nil {
					return err
				}
				if err := netlink.LinkSetUp(l); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return start(env)
	}
}

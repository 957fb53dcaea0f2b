// Package vxlan is the overlay's clear-text data plane (a dataplane.Plane): the network's
// VXLAN device on this host, and per remote host exactly one route, one permanent
// neighbour entry and one FDB entry: state that grows with hosts, not containers.
//
// # Design notes
//
// Routed VXLAN, as flannel's third generation and Calico do: the VXLAN device is not a
// bridge port. The host's bridge holds the gateway (first address of the host subnet) and
// the containers; packets to another host's subnet are routed to the VXLAN device:
//
//	route  <remote subnet> via <remote gateway> dev <vxlan> onlink src <own gateway>
//	neigh  <remote gateway> lladdr <remote VTEP MAC> dev <vxlan> nud permanent
//	fdb    <remote VTEP MAC> dst <remote underlay IP> dev <vxlan> self permanent
//
// Writes go neighbour, then FDB, then route (the activating step last), all with replace
// semantics (NeighSet, RouteReplace), so replaying a peer is harmless; when a later step
// fails the earlier ones are deleted again. Removal goes the other way. The device is made
// with learning off (the FDB is only what the store says), dstport = the network's port,
// local = the underlay address, and the host's VTEP MAC, so a restarted host comes back with
// the MAC its peers already know. A device of that name with another VNI, port, local
// address or underlay link is replaced (its entries go with it; Sync restores them).
//
// Routes carry protocol RouteProtocol (77) so that Sync can find moor's routes on the
// underlay link (directRouting) among the host's own. With directRouting, a peer whose
// underlay address lies in one of the underlay link's connected subnets gets a plain route
// via its underlay address on the underlay link, and no neighbour or FDB entry.
//
// Sync reads every route, neighbour and FDB entry of the VXLAN device (and moor's routes on
// the underlay link), deletes each one no peer justifies or that differs from what the
// peer needs, and applies every peer whose entries are missing or wrong: after it, the
// kernel holds exactly the store's view. What it found wrong is reported as drift.
//
// The VXLAN plane publishes no plane data beyond the lease's own VTEP MAC.
//
// What it does not do: read etcd, make the bridge or its gateway, set sysctls (package
// hostnet does), or configure containers. Every function works through a netlink handle,
// so it may target another network namespace (netlinksafe.NewHandleAt) without switching
// threads.
package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// EncapOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20), UDP (8), VXLAN
// (8) and the inner Ethernet header (14).
const EncapOverhead = 50

// RouteProtocol marks the routes moor's overlay writes (rtm_protocol).
const RouteProtocol netlink.RouteProtocol = 77

// Device describes the network's VXLAN device on this host.
type Device struct {
	VXLAN string           // VXLAN device name
	VNI   int              //
	Port  int              // UDP destination port
	MAC   net.HardwareAddr // the host's VTEP MAC
	// Gateway is the host's gateway (10.240.3.1): the source of the routes to peers.
	Gateway netip.Addr
	// Range is the overlay's range: moor's direct routes on the underlay link into it are
	// the plane's.
	Range    netip.Prefix
	MTU      int // 0: underlay MTU - EncapOverhead
	Underlay dataplane.Underlay
}

// LinkMTU is the MTU of the VXLAN device, the bridge and the containers: Device.MTU, else
// the underlay's minus EncapOverhead.
func (d Device) LinkMTU() int {
	if d.MTU > 0 {
		return d.MTU
	}
	return d.Underlay.MTU - EncapOverhead
}

func ensureVXLAN(h netlinksafe.Handle, d Device) (bool, error) {
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: d.VXLAN, MTU: d.LinkMTU(), HardwareAddr: d.MAC},
		VxlanId:      d.VNI,
		VtepDevIndex: d.Underlay.Link.Attrs().Index,
		SrcAddr:      net.IP(d.Underlay.Addr.AsSlice()),
		Port:         d.Port,
		Learning:     false,
	}
	link, err := h.LinkByName(d.VXLAN)
	switch {
	case err == nil:
		have, ok := link.(*netlink.Vxlan)
		if !ok {
			return false, codes.New(codes.InterfaceConflict, fmt.Sprintf("vxlanDevice %q: a link of that name exists and is a %s, not a vxlan", d.VXLAN, link.Type()))
		}
		if compatible(have, want) {
			return false, adjust(h, link, d)
		}
		if err := h.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
			return false, fmt.Errorf("replacing vxlan device %s: %w", d.VXLAN, err)
		}
	case !plugins.IsNotFound(err):
		return false, fmt.Errorf("looking up vxlan device %s: %w", d.VXLAN, err)
	}
	if err := h.LinkAdd(want); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return ensureVXLAN(h, d) // a concurrent ADD made it
		}
		if errors.Is(err, unix.EOPNOTSUPP) {
			return false, codes.Wrap(codes.KernelFeature, "creating vxlan device "+d.VXLAN+": the kernel has no vxlan support", err)
		}
		return false, fmt.Errorf("creating vxlan device %s (vni %d, port %d, local %s): %w", d.VXLAN, d.VNI, d.Port, d.Underlay.Addr, err)
	}
	link, err = h.LinkByName(d.VXLAN)
	if err != nil {
		return true, fmt.Errorf("looking up new vxlan device %s: %w", d.VXLAN, err)
	}
	return true, h.LinkSetUp(link)
}

// compatible reports whether an existing device can be kept.
func compatible(have, want *netlink.Vxlan) bool {
	return have.VxlanId == want.VxlanId && have.Port == want.Port && have.VtepDevIndex == want.VtepDevIndex &&
		have.SrcAddr.Equal(want.SrcAddr) && !have.Learning
}

// adjust sets MAC, MTU and up state of a kept device.
func adjust(h netlinksafe.Handle, link netlink.Link, d Device) error {
	a := link.Attrs()
	if a.HardwareAddr.String() != d.MAC.String() {
		if err := h.LinkSetHardwareAddr(link, d.MAC); err != nil {
			return fmt.Errorf("setting the VTEP MAC of %s: %w", d.VXLAN, err)
		}
	}
	if a.MTU != d.LinkMTU() {
		if err := h.LinkSetMTU(link, d.LinkMTU()); err != nil {
			return fmt.Errorf("setting the MTU of %s to %d: %w", d.VXLAN, d.LinkMTU(), err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		return h.LinkSetUp(link)
	}
	return nil
}

// Package wireguard is the overlay's encrypting data plane (a dataplane.Plane): the
// network's WireGuard device on this host, and per remote host exactly one WireGuard peer
// (that host's public key, its endpoint, and its subnet as the only allowed IPs) and one
// route to its subnet through the device. State grows with hosts, not containers.
//
// # Design notes
//
// The device is an L3 point-to-multipoint link: packets to another host's subnet are
// routed to it (route <subnet> dev <wg> scope link src <own gateway>, protocol
// vxlan.RouteProtocol's 77 so moor's routes are told from others), and WireGuard picks
// the peer by allowed IPs, encrypts, and sends UDP to the peer's endpoint. A packet from
// a peer is accepted only when its inner source lies in that peer's allowed IPs, so a host
// cannot speak for another's subnet. The device is configured over generic netlink
// (golang.zx2c4.com/wireguard/wgctrl); links and routes over rtnetlink.
//
// Keys: each host makes its key pair on first use (LoadOrCreateKey), keeps the private key
// in a file readable by root only under the network's stateDir (through plugins/statefs,
// which refuses symbolic links and loose directories), and publishes only the public key
// and its endpoint in its lease (lease.PlaneData of type "wireguard"). The private key is
// set on the device by Ensure (or SetKey, for a rotation in place); it never leaves the
// host. A rotated key (RotateKey) is picked up by the other hosts' Apply, which replaces
// the old key's peer in one request, or else by their Sync: the old key's peer is not
// justified any more and is removed, the new one is missing and is written.
//
// The MTU is the underlay's minus WireGuard's real overhead: outer IP header (20 for
// IPv4, 40 for IPv6), UDP (8), WireGuard's data header (16) and its authentication tag
// (16): 60 and 80. Inner packets are padded to 16 bytes, which the kernel accounts for
// within the device MTU.
//
// Sync reads every peer of the device and every route through it, deletes each one no
// peer justifies (unknown key, other allowed IPs or endpoint, a route to a subnet no
// peer holds) and writes every peer whose entries are missing: after it, the kernel holds
// exactly the store's view, and what it found wrong is reported as drift. A peer whose
// lease publishes no usable key (another plane, a damaged key) is an error naming the
// host, never a silent drop.
//
// On a kernel without WireGuard, Available and Ensure answer code 104 naming the module.
//
// What it does not do: read etcd, make the bridge or its gateway, set sysctls (package
// hostnet does), or configure containers.
package wireguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// PlaneType is the lease.PlaneData type of this plane, and PlaneVersion its layout.
const (
	PlaneType    = "wireguard"
	PlaneVersion = 1
)

// Overhead is what WireGuard adds to a packet over an underlay of that family: outer IP
// header, UDP (8), data message header (16) and authentication tag (16).
func Overhead(underlay netip.Addr) int {
	if underlay.Is4() {
		return 20 + 8 + 16 + 16
	}
	return 40 + 8 + 16 + 16
}

// RouteProtocol marks the routes this plane writes (the overlay's rtm_protocol).
const RouteProtocol netlink.RouteProtocol = 77

// Device describes the network's WireGuard device on this host.
type Device struct {
	Name string
	Port int // UDP listen port
	Key  Key // the host's private key
	// Gateway is the host's gateway: the source of the routes to peers.
	Gateway  netip.Addr
	MTU      int // 0: underlay MTU - Overhead
	Underlay dataplane.Underlay
}

// LinkMTU is the MTU of the device, the bridge and the containers.
func (d Device) LinkMTU() int {
	if d.MTU > 0 {
		return d.MTU
	}
	return d.Underlay.MTU - Overhead(d.Underlay.Addr)
}

// PlaneData is what a host publishes: its public key and endpoint.
func (d Device) PlaneData() *lease.PlaneData {
	return &lease.PlaneData{Type: PlaneType, Version: PlaneVersion, PublicKey: d.Key.Public().String(),
		Endpoint: netip.AddrPortFrom(d.Underlay.Addr, uint16(d.Port))}
}

// Plane is one network's WireGuard plane on a host; it implements dataplane.Plane.
type Plane struct {
	h     netlinksafe.Handle
	netns ns.NetNS // nil: the calling thread's namespace
	d     Device
}

var _ dataplane.Plane = (*Plane)(nil)

// New is the plane of device d through h, in netns (nil: the calling thread's). Nothing is
// read or changed until a method is called.
func New(h netlinksafe.Handle, netns ns.NetNS, d Device) *Plane {
	return &Plane{h: h, netns: netns, d: d}
}

// missingModule is the code-104 answer of a kernel without WireGuard.
func missingModule(what string, err error) error {
	return codes.Wrap(codes.KernelFeature, what+": the kernel has no WireGuard support (module wireguard)", err)
}

// Available reports nil when the kernel can make WireGuard devices, else code 104 naming
// the module. It creates nothing: it asks generic netlink's controller for the wireguard
// family, which the kernel loads on demand (families are not per namespace).
func Available() error {
	f, err := netlink.GenlFamilyGet(PlaneType)
	if err != nil || f == nil {
		return missingModule("looking up the wireguard generic netlink family", err)
	}
	return nil
}

func inNS(netns ns.NetNS, fn func() error) error {
	if netns == nil {
		return fn()
	}
	return netns.Do(func(ns.NetNS) error { return fn() })
}

// SetKey puts k on the device as its private key (a rotation: the peers stay, their
// sessions start over) and makes it the plane's key.
func (pl *Plane) SetKey(k Key) error {
	pk := wgtypes.Key(k)
	if err := pl.configure(wgtypes.Config{PrivateKey: &pk}); err != nil {
		return fmt.Errorf("setting the private key of %s: %w", pl.d.Name, err)
	}
	pl.d.Key = k
	return nil
}

// PlaneData is what the host publishes with the plane's current key.
func (pl *Plane) PlaneData() *lease.PlaneData { return pl.d.PlaneData() }

// configure applies cfg to the device over generic netlink.
func (pl *Plane) configure(cfg wgtypes.Config) error {
	return inNS(pl.netns, func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		return c.ConfigureDevice(pl.d.Name, cfg)
	})
}

// device reads the device's peers over generic netlink.
func (pl *Plane) device() (*wgtypes.Device, error) {
	var dev *wgtypes.Device
	err := inNS(pl.netns, func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		dev, err = c.Device(pl.d.Name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading wireguard device %s: %w", pl.d.Name, err)
	}
	return dev, nil
}

// Ensure creates or adjusts the device: the host's private key, listen port, MTU, up. A
// link of that name of another kind is code 105; a kernel without WireGuard, code 104.
func (pl *Plane) Ensure() (bool, error) {
	created := false
	link, err := pl.h.LinkByName(pl.d.Name)
	switch {
	case err == nil:
		if _, ok := link.(*netlink.Wireguard); !ok {
			return false, codes.New(codes.InterfaceConflict, fmt.Sprintf("wireguard device %q: a link of that name exists and is a %s, not a wireguard device", pl.d.Name, link.Type()))
		}
	case plugins.IsNotFound(err):
		err := pl.h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: pl.d.Name, MTU: pl.d.LinkMTU()}})
		switch {
		case errors.Is(err, unix.EEXIST):
			return pl.Ensure() // a concurrent ADD made it
		case errors.Is(err, unix.EOPNOTSUPP):
			return false, missingModule("creating wireguard device "+pl.d.Name, err)
		case err != nil:
			return false, fmt.Errorf("creating wireguard device %s: %w", pl.d.Name, err)
		}
		created = true
		if link, err = pl.h.LinkByName(pl.d.Name); err != nil {
			return true, fmt.Errorf("looking up new wireguard device %s: %w", pl.d.Name, err)
		}
	default:
		return false, fmt.Errorf("looking up wireguard device %s: %w", pl.d.Name, err)
	}
	port := pl.d.Port
	priv := wgtypes.Key(pl.d.Key)
	if err := pl.configure(wgtypes.Config{PrivateKey: &priv, ListenPort: &port}); err != nil {
		return created, fmt.Errorf("setting the key and port %d of %s: %w", port, pl.d.Name, err)
	}
	if link.Attrs().MTU != pl.d.LinkMTU() {
		if err := pl.h.LinkSetMTU(link, pl.d.LinkMTU()); err != nil {
			return created, fmt.Errorf("setting the MTU of %s to %d: %w", pl.d.Name, pl.d.LinkMTU(), err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := pl.h.LinkSetUp(link); err != nil {
			return created, fmt.Errorf("setting %s up: %w", pl.d.Name, err)
		}
	}
	return created, nil
}

// Teardown deletes the device (its peers and routes go with it).
func (pl *Plane) Teardown() error { return plugins.DeleteLinkByName(pl.h, pl.d.Name) }

// LinkMTU is Device.LinkMTU.
func (pl *Plane) LinkMTU() int { return pl.d.LinkMTU() }

func (pl *Plane) link() (netlink.Link, error) {
	l, err := pl.h.LinkByName(pl.d.Name)
	if err != nil {
		return nil, fmt.Errorf("wireguard device %s: %w", pl.d.Name, err)
	}
	return l, nil
}

// PeerKey is p's published public key; an error names the host when it has none.
func PeerKey(p dataplane.Peer) (Key, error) {
	if p.Plane.Type != PlaneType {
		t := p.Plane.Type
		if t == "" {
			t = lease.DefaultPlane
		}
		return Key{}, fmt.Errorf("host %s publishes no WireGuard key: its lease is for the %s plane", p.HostID, t)
	}
	k, err := ParseKey(p.Plane.PublicKey)
	if err != nil {
		return Key{}, fmt.Errorf("host %s: public key in its lease: %w", p.HostID, err)
	}
	return k, nil
}

// endpoint is where p receives: its published endpoint, else its underlay address at the
// network's port.
func (pl *Plane) endpoint(p dataplane.Peer) netip.AddrPort {
	if p.Plane.Endpoint.IsValid() {
		return p.Plane.Endpoint
	}
	return netip.AddrPortFrom(p.Underlay, uint16(pl.d.Port))
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (pl *Plane) route(link netlink.Link, subnet netip.Prefix) *netlink.Route {
	dst := ipNet(subnet)
	return &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Src: net.IP(pl.d.Gateway.AsSlice()),
		Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
}

func (pl *Plane) peerConfig(p dataplane.Peer, k Key) wgtypes.PeerConfig {
	ep := pl.endpoint(p)
	return wgtypes.PeerConfig{PublicKey: wgtypes.Key(k), Endpoint: net.UDPAddrFromAddrPort(ep),
		ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{ipNet(p.Subnet)}}
}

// Apply writes p's peer (removing a peer under another key that held p's subnet), then
// its route (the activating step last), replacing what is there. When the route fails, the peer is removed again.
func (pl *Plane) Apply(p dataplane.Peer) error {
	k, err := PeerKey(p)
	if err != nil {
		return err
	}
	link, err := pl.link()
	if err != nil {
		return err
	}
	dev, err := pl.device()
	if err != nil {
		return err
	}
	// A peer under another key for the same subnet is the host before a rotation: it goes
	// in the same change, so the host has exactly one peer.
	var cfg []wgtypes.PeerConfig
	for _, have := range dev.Peers {
		if have.PublicKey != wgtypes.Key(k) && holds(have, p.Subnet) {
			cfg = append(cfg, wgtypes.PeerConfig{PublicKey: have.PublicKey, Remove: true})
		}
	}
	if err := pl.configure(wgtypes.Config{Peers: append(cfg, pl.peerConfig(p, k))}); err != nil {
		return fmt.Errorf("wireguard peer for %s: %w", p.HostID, err)
	}
	if err := pl.h.RouteReplace(pl.route(link, p.Subnet)); err != nil {
		_ = pl.configure(wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: wgtypes.Key(k), Remove: true}}})
		return fmt.Errorf("route to %s of host %s: %w", p.Subnet, p.HostID, err)
	}
	return nil
}

// Remove deletes p's route and every peer holding its subnet or key. Entries already gone
// are fine.
func (pl *Plane) Remove(p dataplane.Peer) error {
	link, err := pl.link()
	if err != nil {
		return err
	}
	var errs []error
	if err := pl.h.RouteDel(pl.route(link, p.Subnet)); err != nil && !gone(err) {
		errs = append(errs, fmt.Errorf("deleting the route to %s: %w", p.Subnet, err))
	}
	dev, err := pl.device()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	k, kerr := PeerKey(p)
	var rm []wgtypes.PeerConfig
	for _, have := range dev.Peers {
		if (kerr == nil && have.PublicKey == wgtypes.Key(k)) || holds(have, p.Subnet) {
			rm = append(rm, wgtypes.PeerConfig{PublicKey: have.PublicKey, Remove: true})
		}
	}
	if len(rm) > 0 {
		if err := pl.configure(wgtypes.Config{Peers: rm}); err != nil {
			errs = append(errs, fmt.Errorf("removing the wireguard peer of %s: %w", p.HostID, err))
		}
	}
	return errors.Join(errs...)
}

func gone(err error) bool { return plugins.IsNotFound(err) || errors.Is(err, unix.ESRCH) }

// holds reports whether peer has subnet among its allowed IPs.
func holds(peer wgtypes.Peer, subnet netip.Prefix) bool {
	for _, a := range peer.AllowedIPs {
		if p, ok := dataplane.Prefix(&a); ok && p == subnet {
			return true
		}
	}
	return false
}

// justified reports whether the kernel's peer is exactly what p needs.
func (pl *Plane) justified(have wgtypes.Peer, p dataplane.Peer) bool {
	if len(have.AllowedIPs) != 1 || !holds(have, p.Subnet) || have.Endpoint == nil {
		return false
	}
	return have.Endpoint.AddrPort() == pl.endpoint(p) || netip.AddrPortFrom(have.Endpoint.AddrPort().Addr().Unmap(), have.Endpoint.AddrPort().Port()) == pl.endpoint(p)
}

// entries reads the device's peers and moor's routes through it.
func (pl *Plane) entries() (netlink.Link, []wgtypes.Peer, map[netip.Prefix]netlink.Route, error) {
	link, err := pl.link()
	if err != nil {
		return nil, nil, nil, err
	}
	dev, err := pl.device()
	if err != nil {
		return nil, nil, nil, err
	}
	routes, err := pl.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing routes through %s: %w", pl.d.Name, err)
	}
	rs := map[netip.Prefix]netlink.Route{}
	for _, r := range routes {
		if dst, ok := dataplane.Prefix(r.Dst); ok {
			rs[dst] = r
		}
	}
	return link, dev.Peers, rs, nil
}

func sameRoute(have netlink.Route, want *netlink.Route) bool {
	return have.Src.Equal(want.Src) && have.Protocol == want.Protocol && have.Scope == want.Scope
}

// Sync makes the kernel hold exactly peers' entries (see the package doc). A peer without
// a usable key is an error naming it; the others are still written.
func (pl *Plane) Sync(peers []dataplane.Peer) (dataplane.Report, error) {
	var rep dataplane.Report
	link, have, routes, err := pl.entries()
	if err != nil {
		return rep, err
	}
	var errs []error
	want := map[wgtypes.Key]dataplane.Peer{}
	subnets := map[netip.Prefix]bool{}
	sorted := append([]dataplane.Peer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Subnet.Addr().Less(sorted[j].Subnet.Addr()) })
	for _, p := range sorted {
		k, err := PeerKey(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[wgtypes.Key(k)] = p
		subnets[p.Subnet] = true
	}
	kept := map[wgtypes.Key]bool{}
	var rm []wgtypes.PeerConfig
	for _, hp := range have {
		if p, ok := want[hp.PublicKey]; ok && pl.justified(hp, p) {
			kept[hp.PublicKey] = true
			continue
		}
		rm = append(rm, wgtypes.PeerConfig{PublicKey: hp.PublicKey, Remove: true})
		rep.Removed++
		rep.Details = append(rep.Details, "removed wireguard peer "+Key(hp.PublicKey).String())
	}
	if len(rm) > 0 {
		if err := pl.configure(wgtypes.Config{Peers: rm}); err != nil {
			errs = append(errs, fmt.Errorf("removing stale wireguard peers: %w", err))
		}
	}
	for dst, r := range routes {
		if subnets[dst] && sameRoute(r, pl.route(link, dst)) {
			continue
		}
		if err := pl.h.RouteDel(&r); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting stale route %s: %w", dst, err))
			continue
		}
		delete(routes, dst)
		rep.Removed++
		rep.Details = append(rep.Details, "removed route "+dst.String())
	}
	for _, p := range sorted {
		k, err := PeerKey(p)
		if err != nil {
			continue
		}
		if _, ok := routes[p.Subnet]; ok && kept[wgtypes.Key(k)] {
			continue
		}
		if err := pl.Apply(p); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Repaired++
		rep.Details = append(rep.Details, "wrote the wireguard peer and route of "+p.HostID)
	}
	return rep, errors.Join(errs...)
}

// Missing names what the kernel lacks for peers (for CHECK and status); nil when complete.
func (pl *Plane) Missing(peers []dataplane.Peer) ([]string, error) {
	link, have, routes, err := pl.entries()
	if err != nil {
		return nil, err
	}
	byKey := map[wgtypes.Key]wgtypes.Peer{}
	for _, hp := range have {
		byKey[hp.PublicKey] = hp
	}
	var out []string
	for _, p := range peers {
		k, err := PeerKey(p)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		if hp, ok := byKey[wgtypes.Key(k)]; !ok || !pl.justified(hp, p) {
			out = append(out, "wireguard peer "+k.String()+" of host "+p.HostID)
		}
		if r, ok := routes[p.Subnet]; !ok || !sameRoute(r, pl.route(link, p.Subnet)) {
			out = append(out, "route to "+p.Subnet.String()+" of host "+p.HostID)
		}
	}
	return out, nil
}

// PeerState is what the kernel knows of one peer's session.
type PeerState struct {
	HostID string
	// Key is the public key the peer's lease publishes (zero when it publishes none).
	Key           Key
	LastHandshake time.Time // zero: never
	Received      int64     // bytes received from the peer
	Sent          int64     // bytes sent to the peer
	Present       bool      // the device holds a peer under Key
	// Endpoint and AllowedIPs are the device's peer's (when Present).
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
}

// Sessions reports, per peer, its last handshake and traffic: a peer whose handshake never
// completes although traffic was sent to it has a wrong key, or its port is unreachable.
func (pl *Plane) Sessions(peers []dataplane.Peer) ([]PeerState, error) {
	dev, err := pl.device()
	if err != nil {
		return nil, err
	}
	byKey := map[wgtypes.Key]wgtypes.Peer{}
	for _, hp := range dev.Peers {
		byKey[hp.PublicKey] = hp
	}
	out := make([]PeerState, 0, len(peers))
	for _, p := range peers {
		s := PeerState{HostID: p.HostID}
		if k, err := PeerKey(p); err == nil {
			s.Key = k
			if hp, ok := byKey[wgtypes.Key(k)]; ok {
				s.Present, s.LastHandshake, s.Received, s.Sent = true, hp.LastHandshakeTime, hp.ReceiveBytes, hp.TransmitBytes
				if hp.Endpoint != nil {
					ap := hp.Endpoint.AddrPort()
					s.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				}
				for _, n := range hp.AllowedIPs {
					if pfx, ok := dataplane.Prefix(&n); ok {
						s.AllowedIPs = append(s.AllowedIPs, pfx)
					}
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

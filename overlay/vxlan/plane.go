package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/plugins"
)

// Peer is another host (dataplane.Peer).
type Peer = dataplane.Peer

// dumpAttempts bounds the retries of a netlink dump the kernel interrupted.
const dumpAttempts = 5

// Plane writes peers' entries on one host; it implements dataplane.Plane.
type Plane struct {
	h      netlinksafe.Handle
	d      Device
	direct bool
	vx     netlink.Link // the device, once found or made
}

var _ dataplane.Plane = (*Plane)(nil)

// New is the plane of device d through h; direct enables directRouting. Nothing is read
// or changed until a method is called.
func New(h netlinksafe.Handle, d Device, direct bool) *Plane {
	return &Plane{h: h, d: d, direct: direct}
}

// Ensure creates or adjusts the VXLAN device (see the package doc). A link of that name
// of another kind is code 105.
func (pl *Plane) Ensure() (bool, error) {
	pl.vx = nil
	created, err := ensureVXLAN(pl.h, pl.d)
	if err != nil {
		return created, err
	}
	return created, pl.open()
}

// Teardown deletes the VXLAN device (its routes, neighbours and FDB go with it).
func (pl *Plane) Teardown() error {
	pl.vx = nil
	return plugins.DeleteLinkByName(pl.h, pl.d.VXLAN)
}

// LinkMTU is Device.LinkMTU.
func (pl *Plane) LinkMTU() int { return pl.d.LinkMTU() }

// open finds the device (Ensure made it).
func (pl *Plane) open() error {
	if pl.vx != nil {
		return nil
	}
	vx, err := pl.h.LinkByName(pl.d.VXLAN)
	if err != nil {
		return fmt.Errorf("vxlan device %s: %w", pl.d.VXLAN, err)
	}
	pl.vx = vx
	return nil
}

// isDirect reports whether p is reached without encapsulation.
func (pl *Plane) isDirect(p Peer) bool { return pl.direct && pl.d.Underlay.OnLink(p.Underlay) }

func (pl *Plane) route(p Peer) *netlink.Route {
	r := &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP(p.Subnet.Addr().AsSlice()), Mask: net.CIDRMask(p.Subnet.Bits(), 32)},
		Src:      net.IP(pl.d.Gateway.AsSlice()),
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
	if pl.isDirect(p) {
		r.LinkIndex, r.Gw = pl.d.Underlay.Link.Attrs().Index, net.IP(p.Underlay.AsSlice())
		return r
	}
	r.LinkIndex, r.Gw, r.Flags = pl.vx.Attrs().Index, net.IP(p.Gateway.AsSlice()), int(netlink.FLAG_ONLINK)
	return r
}

func (pl *Plane) neigh(p Peer) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: pl.vx.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: net.IP(p.Gateway.AsSlice()), HardwareAddr: p.MAC}
}

func (pl *Plane) fdb(p Peer) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: pl.vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.IP(p.Underlay.AsSlice()), HardwareAddr: p.MAC}
}

// Apply writes p's neighbour, FDB entry and route, in that order, replacing what is there.
// When a step fails, the steps before it are deleted again.
func (pl *Plane) Apply(p Peer) error {
	if err := pl.open(); err != nil {
		return err
	}
	if pl.isDirect(p) {
		if err := pl.h.RouteReplace(pl.route(p)); err != nil {
			return fmt.Errorf("direct route to %s: %w", p, err)
		}
		return nil
	}
	n, f := pl.neigh(p), pl.fdb(p)
	if err := pl.h.NeighSet(n); err != nil {
		return fmt.Errorf("neighbour entry for %s: %w", p, err)
	}
	if err := pl.h.NeighSet(f); err != nil {
		_ = pl.h.NeighDel(n)
		return fmt.Errorf("FDB entry for %s: %w", p, err)
	}
	if err := pl.h.RouteReplace(pl.route(p)); err != nil {
		_ = pl.h.NeighDel(f)
		_ = pl.h.NeighDel(n)
		return fmt.Errorf("route to %s: %w", p, err)
	}
	return nil
}

// Remove deletes p's route, FDB entry and neighbour. Entries already gone are fine.
func (pl *Plane) Remove(p Peer) error {
	if err := pl.open(); err != nil {
		return err
	}
	var errs []error
	if err := pl.h.RouteDel(pl.route(p)); err != nil && !gone(err) {
		errs = append(errs, fmt.Errorf("deleting the route to %s: %w", p, err))
	}
	if !pl.isDirect(p) {
		if err := pl.h.NeighDel(pl.fdb(p)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting the FDB entry of %s: %w", p, err))
		}
		if err := pl.h.NeighDel(pl.neigh(p)); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting the neighbour entry of %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func gone(err error) bool { return plugins.IsNotFound(err) || errors.Is(err, unix.ESRCH) }

// Entries is what the kernel holds for the network, keyed for comparison: routes by
// destination subnet ("gw dev-index" as value), neighbours by IP (MAC and state), FDB
// entries by MAC (destination IP).
type Entries struct {
	Routes map[netip.Prefix]netlink.Route
	Neighs map[netip.Addr]netlink.Neigh
	FDB    map[string]netlink.Neigh
}

// Count is the number of entries of each kind.
func (e Entries) Count() (routes, neighs, fdb int) { return len(e.Routes), len(e.Neighs), len(e.FDB) }

// Read lists the network's entries: every IPv4 route, neighbour and FDB entry of the VXLAN
// device, plus routes with RouteProtocol on the underlay link into the range.
func (pl *Plane) Read() (Entries, error) {
	e := Entries{Routes: map[netip.Prefix]netlink.Route{}, Neighs: map[netip.Addr]netlink.Neigh{}, FDB: map[string]netlink.Neigh{}}
	if err := pl.open(); err != nil {
		return e, err
	}
	vxIndex := pl.vx.Attrs().Index
	routes, err := pl.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return e, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		dst, ok := dataplane.Prefix(r.Dst)
		if !ok {
			continue
		}
		onVX := r.LinkIndex == vxIndex
		ours := r.Protocol == RouteProtocol && pl.d.Range.Contains(dst.Addr()) && r.LinkIndex == pl.d.Underlay.Link.Attrs().Index
		if onVX || ours {
			e.Routes[dst] = r
		}
	}
	neighs, err := dump(func() ([]netlink.Neigh, error) { return pl.h.NeighList(vxIndex, unix.AF_INET) })
	if err != nil {
		return e, fmt.Errorf("listing neighbours of %s: %w", pl.vx.Attrs().Name, err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && n.LinkIndex == vxIndex {
			e.Neighs[a.Unmap()] = n
		}
	}
	fdb, err := dump(func() ([]netlink.Neigh, error) { return pl.h.NeighList(0, unix.AF_BRIDGE) })
	if err != nil {
		return e, fmt.Errorf("listing FDB entries: %w", err)
	}
	for _, n := range fdb {
		if n.LinkIndex == vxIndex && n.Flags&netlink.NTF_SELF != 0 {
			e.FDB[n.HardwareAddr.String()] = n
		}
	}
	return e, nil
}

func dump[T any](fn func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for range dumpAttempts {
		out, err = fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

// Sync makes the kernel hold exactly peers' entries (see the package doc).
func (pl *Plane) Sync(peers []Peer) (dataplane.Report, error) {
	var rep dataplane.Report
	have, err := pl.Read()
	if err != nil {
		return rep, err
	}
	wantRoutes := map[netip.Prefix]*netlink.Route{}
	wantNeighs := map[netip.Addr]Peer{}
	wantFDB := map[string]Peer{}
	for _, p := range peers {
		wantRoutes[p.Subnet] = pl.route(p)
		if !pl.isDirect(p) {
			wantNeighs[p.Gateway] = p
			wantFDB[p.MAC.String()] = p
		}
	}
	var errs []error
	for dst, r := range have.Routes {
		if w, ok := wantRoutes[dst]; ok && sameRoute(r, w) {
			continue
		}
		if err := pl.h.RouteDel(&r); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting stale route %s: %w", dst, err))
			continue
		}
		delete(have.Routes, dst)
		rep.Removed++
		rep.Details = append(rep.Details, "removed route "+dst.String())
	}
	for ip, n := range have.Neighs {
		if p, ok := wantNeighs[ip]; ok && n.HardwareAddr.String() == p.MAC.String() && n.State == netlink.NUD_PERMANENT {
			continue
		}
		if err := pl.h.NeighDel(&n); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting stale neighbour %s: %w", ip, err))
			continue
		}
		delete(have.Neighs, ip)
		rep.Removed++
		rep.Details = append(rep.Details, "removed neighbour "+ip.String())
	}
	for mac, n := range have.FDB {
		if p, ok := wantFDB[mac]; ok && n.IP.Equal(net.IP(p.Underlay.AsSlice())) {
			continue
		}
		if err := pl.h.NeighDel(&n); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("deleting stale FDB entry %s: %w", mac, err))
			continue
		}
		delete(have.FDB, mac)
		rep.Removed++
		rep.Details = append(rep.Details, "removed FDB entry "+mac)
	}
	sorted := append([]Peer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Subnet.Addr().Less(sorted[j].Subnet.Addr()) })
	for _, p := range sorted {
		_, okRoute := have.Routes[p.Subnet]
		_, okNeigh := have.Neighs[p.Gateway]
		_, okFDB := have.FDB[p.MAC.String()]
		if okRoute && (pl.isDirect(p) || okNeigh && okFDB) {
			continue
		}
		if err := pl.Apply(p); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Repaired++
		rep.Details = append(rep.Details, "wrote entries of "+p.HostID)
	}
	return rep, errors.Join(errs...)
}

// sameRoute compares a kernel route with the wanted one.
func sameRoute(have netlink.Route, want *netlink.Route) bool {
	return have.LinkIndex == want.LinkIndex && have.Gw.Equal(want.Gw) && have.Src.Equal(want.Src) &&
		have.Protocol == want.Protocol && (have.Flags&int(netlink.FLAG_ONLINK)) == (want.Flags&int(netlink.FLAG_ONLINK))
}

// Missing names what the kernel lacks for peers (for CHECK and status); nil when complete.
func (pl *Plane) Missing(peers []Peer) ([]string, error) {
	have, err := pl.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range peers {
		if r, ok := have.Routes[p.Subnet]; !ok || !sameRoute(r, pl.route(p)) {
			out = append(out, "route to "+p.Subnet.String()+" of host "+p.HostID)
		}
		if pl.isDirect(p) {
			continue
		}
		if n, ok := have.Neighs[p.Gateway]; !ok || n.HardwareAddr.String() != p.MAC.String() {
			out = append(out, "neighbour "+p.Gateway.String()+" of host "+p.HostID)
		}
		if f, ok := have.FDB[p.MAC.String()]; !ok || !f.IP.Equal(net.IP(p.Underlay.AsSlice())) {
			out = append(out, "FDB entry "+p.MAC.String()+" of host "+p.HostID)
		}
	}
	return out, nil
}

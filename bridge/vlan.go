package main

// Bridge VLANs (vlan, vlanTrunk, preserveDefaultVlan), as the reference bridge plugin
// gives them, on a bridge with VLAN filtering:
//
//   - vlan N: the container's port is in VLAN N as PVID, untagged: the container sends and
//     receives plain frames, and the bridge forwards them only to ports in VLAN N.
//   - vlanTrunk: the port carries those VLANs tagged (the container terminates the tags).
//   - preserveDefaultVlan false: VLAN 1, which the kernel gives every new port, is removed
//     from it, so the container is in no VLAN but its own.
//   - With isGateway and vlan N, the bridge's own port (the host's side, where the gateway
//     address lives) gets VLAN N as PVID, untagged, so the host answers and routes for the
//     containers of VLAN N. The bridge device has one PVID, so one bridge serves a gateway
//     for one VLAN: a second network asking for a gateway in another VLAN on the same
//     bridge is refused with code 105 rather than silently taking the first one's gateway.
//     The entry stays with the bridge (like the gateway address, the network outlives its
//     containers).
//
// VLAN filtering itself is package link/bridge's (switched on only when off; a kernel
// without it is code 104).
//
// The port's entries live and die with the host end of the veth, so DEL and GC, which
// delete that veth, leave none behind; CHECK compares them with the config.

import (
	"errors"
	"fmt"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// defaultVlan is the VLAN the kernel puts every new bridge port (and the bridge) in.
const defaultVlan = 1

// vlanEntry is one VLAN of a bridge port.
type vlanEntry struct {
	id             uint16
	pvid, untagged bool
}

func (v vlanEntry) String() string {
	s := fmt.Sprintf("VLAN %d", v.id)
	if v.pvid {
		s += " PVID"
	}
	if v.untagged {
		s += " untagged"
	} else {
		s += " tagged"
	}
	return s
}

// portVlans are the entries the config gives a container's port, VLAN 1 aside.
func (c *conf) portVlans() []vlanEntry {
	var out []vlanEntry
	if c.Vlan != 0 {
		out = append(out, vlanEntry{id: uint16(c.Vlan), pvid: true, untagged: true})
	}
	for _, id := range c.trunkIDs {
		if id != c.Vlan {
			out = append(out, vlanEntry{id: uint16(id)})
		}
	}
	return out
}

// setupPortVlans gives the container's port (the host end of its veth, already a port of
// br) its VLANs, and the bridge the gateway's VLAN. The port's entries go with the port
// when ADD rolls back; the bridge's entry is undone here.
func setupPortVlans(h netlinksafe.Handle, br, port netlink.Link, c *conf, undo *plugins.Undo) error {
	if !c.vlanFiltering() {
		return nil
	}
	name := port.Attrs().Name
	for _, v := range c.portVlans() {
		if err := h.BridgeVlanAdd(port, v.id, v.pvid, v.untagged, false, true); err != nil {
			return fmt.Errorf("putting port %s in %s: %w", name, v, err)
		}
	}
	if !c.PreserveDefaultVlan {
		if err := h.BridgeVlanDel(port, defaultVlan, false, false, false, true); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing VLAN %d from port %s: %w", defaultVlan, name, err)
		}
	}
	if c.IsGW && c.Vlan != 0 {
		return ensureGatewayVlan(h, br, c, undo)
	}
	return nil
}

// ensureGatewayVlan makes VLAN c.Vlan the PVID, untagged, of the bridge's own port; its
// undo gives the PVID back to VLAN 1 when VLAN 1 had it.
func ensureGatewayVlan(h netlinksafe.Handle, br netlink.Link, c *conf, undo *plugins.Undo) error {
	self, err := linkVlans(h, br.Attrs().Index)
	if err != nil {
		return err
	}
	want := uint16(c.Vlan)
	had, defaultWasPVID := false, false
	for _, v := range self {
		had = had || v.id == want
		defaultWasPVID = defaultWasPVID || (v.id == defaultVlan && v.pvid)
		if !v.pvid {
			continue
		}
		switch v.id {
		case want:
			if v.untagged {
				return nil
			}
		case defaultVlan:
		default:
			return codes.New(codes.InterfaceConflict, fmt.Sprintf("vlan %d: bridge %s already serves a gateway in VLAN %d (its own PVID); a bridge has one PVID, so put this network on another bridge or set isGateway false", c.Vlan, c.BrName, v.id))
		}
	}
	if err := h.BridgeVlanAdd(br, want, true, true, true, false); err != nil {
		return fmt.Errorf("putting bridge %s (the gateway) in VLAN %d: %w", c.BrName, c.Vlan, err)
	}
	undo.Push(fmt.Sprintf("take bridge %s out of VLAN %d", c.BrName, c.Vlan), func() error {
		if !had {
			if err := h.BridgeVlanDel(br, want, true, true, true, false); err != nil && !plugins.IsNotFound(err) {
				return err
			}
		}
		if defaultWasPVID {
			return h.BridgeVlanAdd(br, defaultVlan, true, true, true, false)
		}
		return nil
	})
	return nil
}

// linkVlans lists the VLAN entries of the link with index idx, sorted by id.
func linkVlans(h netlinksafe.Handle, idx int) ([]vlanEntry, error) {
	var all map[int32][]*nl.BridgeVlanInfo
	var err error
	for try := 0; try < 5; try++ { // a dump interrupted by a concurrent change is retried
		if all, err = h.BridgeVlanList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing bridge VLANs: %w", err)
	}
	var out []vlanEntry
	for _, v := range all[int32(idx)] {
		out = append(out, vlanEntry{id: v.Vid, pvid: v.PortVID(), untagged: v.EngressUntag()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// checkVlans names every difference between the VLANs of the bridge, of the container's
// port and what the config gives them.
func checkVlans(h netlinksafe.Handle, br, port netlink.Link, c *conf) []string {
	if !c.vlanFiltering() {
		return nil
	}
	var problems []string
	if b, ok := br.(*netlink.Bridge); ok && (b.VlanFiltering == nil || !*b.VlanFiltering) {
		problems = append(problems, fmt.Sprintf("VLAN filtering is off on bridge %s", c.BrName))
	}
	have, err := linkVlans(h, port.Attrs().Index)
	if err != nil {
		return append(problems, err.Error())
	}
	byID := map[uint16]vlanEntry{}
	for _, v := range have {
		byID[v.id] = v
	}
	name := port.Attrs().Name
	wanted := map[uint16]bool{}
	for _, want := range c.portVlans() {
		wanted[want.id] = true
		got, ok := byID[want.id]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("port %s is not in VLAN %d (want %s)", name, want.id, want))
		case got != want:
			problems = append(problems, fmt.Sprintf("port %s has %s, want %s", name, got, want))
		}
	}
	for _, got := range have {
		switch {
		case wanted[got.id]:
		case got.id == defaultVlan && c.PreserveDefaultVlan:
		case got.id == defaultVlan:
			problems = append(problems, fmt.Sprintf("port %s is in VLAN %d although preserveDefaultVlan is false", name, defaultVlan))
		default:
			problems = append(problems, fmt.Sprintf("port %s has %s, which the config does not give it", name, got))
		}
	}
	if c.IsGW && c.Vlan != 0 {
		self, err := linkVlans(h, br.Attrs().Index)
		if err != nil {
			return append(problems, err.Error())
		}
		found := false
		for _, v := range self {
			found = found || (v.id == uint16(c.Vlan) && v.pvid && v.untagged)
		}
		if !found {
			problems = append(problems, fmt.Sprintf("bridge %s (the gateway) is not in VLAN %d as PVID untagged", c.BrName, c.Vlan))
		}
	}
	return problems
}

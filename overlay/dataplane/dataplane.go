// Package dataplane is the interface between the overlay's control side (the plugin's ADD
// and CHECK, the agent's reconcile loop, package hostnet) and the kernel objects that
// carry container traffic between hosts. Clear VXLAN (package vxlan) is the first
// implementation; an encrypting one (WireGuard: one peer per other host, with that
// host's public key, endpoint, and its subnet as allowed IPs) fits the same interface.
//
// The contract every implementation keeps:
//   - per other host, the entries the store justifies (Apply) and nothing else (Sync
//     deletes what no peer justifies or what differs, writes what is missing, and
//     reports each change as drift): state grows with hosts, not containers;
//   - Apply and Remove are repeatable; a failing Apply leaves none of its entries;
//   - routes to a peer's subnet use the host's own gateway as source;
//   - the host's own tunnel device is made by Ensure and removed by Teardown, which
//     needs only the network's config (the agent's --leave runs without a lease).
//
// What a host publishes for the others (a public key, an endpoint) goes into its lease
// (lease.PlaneData) before the lease is claimed; peers carry the other hosts' in
// Peer.Plane. Private keys never leave the host.
//
// What it does not do: read the store, prepare the bridge, the gateway, sysctls or the
// masquerade (package hostnet), or touch containers.
package dataplane

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/moornet/moor/overlay/lease"
)

// Peer is another host of the network, as its lease describes it.
type Peer struct {
	HostID  string
	Subnet  netip.Prefix
	Gateway netip.Addr // the peer's first address of Subnet: its bridge, and the next hop to Subnet
	// MAC is the peer's VTEP MAC (the lease's vtepMAC).
	MAC      net.HardwareAddr
	Underlay netip.Addr
	// Plane is the peer's published plane data; the zero value when its lease has none.
	Plane lease.PlaneData
}

func (p Peer) String() string {
	return fmt.Sprintf("%s (%s via %s, VTEP %s at %s)", p.HostID, p.Subnet, p.Gateway, p.MAC, p.Underlay)
}

// PeerOf is one lease as a peer.
func PeerOf(l lease.Lease) Peer {
	p := Peer{HostID: l.HostID, Subnet: l.Subnet, Gateway: l.Gateway(), MAC: l.VTEPMAC, Underlay: l.Underlay}
	if l.Plane != nil {
		p.Plane = *l.Plane
	}
	return p
}

// Peers are the leases of every host but self.
func Peers(leases []lease.Lease, self string) []Peer {
	out := make([]Peer, 0, len(leases))
	for _, l := range leases {
		if l.HostID != self {
			out = append(out, PeerOf(l))
		}
	}
	return out
}

// Plane is one network's data plane on this host.
type Plane interface {
	// Ensure creates or adjusts the host's tunnel device; created reports that this call
	// made it (the caller's undo is Teardown).
	Ensure() (created bool, err error)
	// Teardown removes the tunnel device and every peer entry with it; a device already
	// gone is fine.
	Teardown() error
	// LinkMTU is the MTU of the tunnel, the bridge and the containers' interfaces: the
	// configured one, else the underlay's minus the plane's real overhead.
	LinkMTU() int
	// Apply writes p's entries, replacing what is there.
	Apply(p Peer) error
	// Remove deletes p's entries; entries already gone are fine.
	Remove(p Peer) error
	// Sync makes the kernel hold exactly peers' entries.
	Sync(peers []Peer) (Report, error)
	// Missing names what the kernel lacks for peers (for CHECK and status); nil when
	// complete.
	Missing(peers []Peer) ([]string, error)
}

// Prober is a plane that can check the path to each peer end to end (the WireGuard plane:
// its port, its key, a full-size packet); STATUS and the agent's status use it when the
// plane has it.
type Prober interface {
	// Probe returns one sentence per peer that cannot be reached in full, naming the peer
	// and the cause; nil when every peer answers.
	Probe(peers []Peer) ([]string, error)
}

// Report tells what Sync changed.
type Report struct {
	// Removed counts entries no peer justified (or that were wrong) and were deleted.
	Removed int
	// Repaired counts peers whose entries were missing or wrong and were written.
	Repaired int
	// Details names each change, for the log.
	Details []string
}

// Drift is the number of wrong kernel entries found.
func (r Report) Drift() int { return r.Removed + r.Repaired }

// Prefix converts a kernel address or route destination; false for nil.
func Prefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

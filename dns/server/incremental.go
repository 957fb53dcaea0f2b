package server

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"slices"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// Incremental updates. An ADD changes one record of one network; re-reading the network
// costs a file per record (tens of milliseconds at a thousand containers), so the plugin
// names the record it wrote (POST /reload?network=&container=&ifname=) and the server reads
// that record alone and adds it to a copy of the network's view. The copy must equal what
// buildView makes of the network's records; withRecord adds only where that is plain and
// otherwise the network is re-read (Server.update):
//   - the view has a record of the same container and interface (a replacement: the old
//     names must go), or a hash of another key collides with it;
//   - a name form or reverse name of the record is in the view already (a merged entry's
//     addresses, or a PTR's primary name, depend on the records' order);
//   - the network would pass records.MaxNamesPerNetwork, or left records out already;
//   - the network's definition in the store is not the one the view was built from
//     (gateways, subnets, domain: only a rebuild gains listeners for new gateways);
//   - the network is not served yet, the record is gone (a DEL), or the store cannot
//     read one record (a backend without Get).
// A DEL re-reads its network: the view does not keep which names a record held.

// keySeed seeds the record key hashes of this process's views.
var keySeed = maphash.MakeSeed()

// recordHash hashes a record's container ID and interface. A collision only sends an
// update down the rebuild path.
func recordHash(containerID, ifName string) uint64 {
	var h maphash.Hash
	h.SetSeed(keySeed)
	_, _ = h.WriteString(containerID)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(ifName)
	return h.Sum64()
}

// withRecord returns a copy of v with r added, or false when the copy could differ from
// buildView of v's records and r (see above).
func (v *netView) withRecord(r records.Record) (*netView, bool) {
	if v.skipped > 0 || v.nameCount+len(r.Names) > records.MaxNamesPerNetwork {
		return nil, false
	}
	key := recordHash(r.ContainerID, r.IfName)
	at, found := slices.BinarySearch(v.keys, key)
	if found {
		return nil, false
	}
	netLabel := networkLabel(v.name)
	for _, name := range r.Names {
		if _, ok := v.names[name+"."]; ok {
			return nil, false
		}
		if _, ok := v.names[name+"."+v.zone]; ok {
			return nil, false
		}
		if netLabel != "" && len(name)+1+len(netLabel) <= maxNameLen {
			if _, ok := v.names[name+"."+netLabel+"."]; ok {
				return nil, false
			}
		}
	}
	for _, ip := range r.IPs {
		if rev, err := dns.ReverseAddr(ip.String()); err == nil {
			if _, ok := v.ptr[rev]; ok {
				return nil, false
			}
		}
	}
	out := *v
	out.names = maps.Clone(v.names)
	out.ptr = maps.Clone(v.ptr)
	if out.names == nil {
		out.names = map[string]*entry{}
	}
	if out.ptr == nil {
		out.ptr = map[string]string{}
	}
	out.keys = slices.Insert(slices.Clip(v.keys), at, key)
	out.records++
	b := &viewBuilder{v: &out}
	b.add(r, netLabel)
	return &out, true
}

// recordGetter is a store that reads one record (records.Local).
type recordGetter interface {
	Get(ctx context.Context, network, containerID, ifName string) (records.Record, error)
}

// applyRecord brings the view of network up to date after the record of containerID and
// ifName was written or deleted: incrementally when withRecord can, else by re-reading
// the network.
func (s *Server) applyRecord(ctx context.Context, network, containerID, ifName string) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	if s.addRecord(ctx, network, containerID, ifName) {
		s.metrics.incremental.Add(1)
		return nil
	}
	return s.updateLocked(ctx, []string{network})
}

// addRecord adds the record to its network's view when withRecord can; callers hold
// updateMu.
func (s *Server) addRecord(ctx context.Context, network, containerID, ifName string) bool {
	g, ok := s.store.(recordGetter)
	if !ok {
		return false
	}
	snap := s.snap.Load()
	v := snap.nets[network]
	if v == nil {
		return false
	}
	r, err := g.Get(ctx, network, containerID, ifName)
	if err != nil {
		if !errors.Is(err, records.ErrNoRecord) {
			s.metrics.storeErrors.Add(1)
		}
		return false
	}
	nets, err := s.store.Networks(ctx)
	if err != nil {
		return false
	}
	i := slices.IndexFunc(nets, func(n records.Network) bool { return n.Name == network })
	if i < 0 || !sameNetwork(nets[i], v.src) {
		return false
	}
	nv, ok := v.withRecord(r)
	if !ok {
		return false
	}
	s.publish(snap.with(map[string]*netView{network: nv}, s.gateways))
	return true
}

// sameNetwork reports whether two definitions of a network index alike.
func sameNetwork(a, b records.Network) bool {
	if a.Name != b.Name || a.Domain != b.Domain || a.Internal != b.Internal ||
		!slices.Equal(a.Upstreams, b.Upstreams) ||
		len(a.Gateways) != len(b.Gateways) || len(a.Subnets) != len(b.Subnets) {
		return false
	}
	for i := range a.Gateways {
		if !a.Gateways[i].Equal(b.Gateways[i]) {
			return false
		}
	}
	for i := range a.Subnets {
		if a.Subnets[i].String() != b.Subnets[i].String() {
			return false
		}
	}
	return true
}

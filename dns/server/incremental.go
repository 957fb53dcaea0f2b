package server

import (
	"context"
	"errors"
	"hash/maphash"
	"net/netip"
	"slices"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// Incremental updates. An ADD or DEL changes one record of one network; re-reading the
// network costs a file per record (tens of milliseconds at a thousand containers), so the
// plugin names the record it wrote or deleted (POST /reload?network=&container=&ifname=)
// and the server reads that record alone: when it is there, withRecord adds it to a copy
// of the network's view; when it is gone, withoutRecord removes what it had added. The
// copy must equal what buildView makes of the network's records; both change the view only
// where that is plain and otherwise the network is re-read (Server.update).
//
// withRecord refuses:
//   - a record of a container and interface the view has already (a replacement: the old
//     names must go), or whose key's hash collides with another's;
//   - a record with a name form or reverse name that is in the view already (a merged
//     entry's addresses, or a PTR's primary name, depend on the records' order);
//   - a record that would bring the network past records.MaxNamesPerNetwork, or any
//     record once the network left records out.
//
// withoutRecord removes the names and reverse names the record added, which the view keeps
// per record (recordNames: the names; their entry holds the addresses, whose reverse names
// follow), and refuses:
//   - a record that added a name form or reverse name that another record, or another
//     name of its own, added too (the view's shared set, which buildView fills and
//     withRecord never grows but for a record's own names): what remains of it depends on
//     the records' order;
//   - a record whose key's hash another record has too, or any record once the network
//     left records out (the record that would come back in is unknown).
//
// A DEL of a record the view does not hold changes nothing. Both paths also take a
// rebuild when the network's definition in the store is not the one the view was built
// from (gateways, subnets, domain: only a rebuild gains listeners for new gateways), when
// the network is not served yet, or when the store cannot read one record (a backend
// without Get). A record that a DEL names but that is there again (an ADD came between)
// is an ADD. The cost of both is a copy of the network's maps (see withRecord), not a
// read of its records.
//
// The record hash is 64 bits with a per-process random seed: a DEL of a record the view
// does not hold removes another record's names only if their hashes collide, about once
// in 2^64/n DELs on a network of n records.

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
	shard, at, found, _ := v.recs.find(key)
	if found {
		return nil, false
	}
	netLabel := networkLabel(v.name)
	for _, name := range r.Names {
		if _, ok := v.names.get(name + "."); ok {
			return nil, false
		}
		if _, ok := v.names.get(name + "." + v.zone); ok {
			return nil, false
		}
		if netLabel != "" && len(name)+1+len(netLabel) <= maxNameLen {
			if _, ok := v.names.get(name + "." + netLabel + "."); ok {
				return nil, false
			}
		}
	}
	for _, ip := range r.IPs {
		if rev, err := dns.ReverseAddr(ip.String()); err == nil {
			if _, ok := v.ptr.get(rev); ok {
				return nil, false
			}
		}
	}
	out := *v
	out.records++
	ne, pe := v.names.edit(), v.ptr.edit()
	b := &viewBuilder{v: &out, names: ne, ptr: pe}
	names := b.add(r, netLabel)
	out.names, out.ptr = ne.done(), pe.done()
	out.recs = v.recs.with(shard, at, recordNames{key: key, names: names})
	return &out, true
}

// withoutRecord returns a copy of v without the record of containerID and ifName (v
// itself when v does not hold it), or false when the copy could differ from buildView of
// v's other records (see above).
func (v *netView) withoutRecord(containerID, ifName string) (*netView, bool) {
	if v.skipped > 0 {
		return nil, false
	}
	key := recordHash(containerID, ifName)
	shard, at, found, dup := v.recs.find(key)
	if !found {
		return v, true
	}
	heads := v.recs.shards[shard][at].names
	if dup || len(heads) == 0 {
		return nil, false
	}
	netLabel := networkLabel(v.name)
	var forms []string
	for _, head := range heads {
		for _, f := range nameForms(head[:len(head)-1], v.zone, netLabel) {
			if _, sh := v.shared[f]; sh {
				return nil, false
			}
			if e, _ := v.names.get(f); e == nil {
				return nil, false
			}
			forms = append(forms, f)
		}
	}
	// The first name's entry is the record's own (no other record added that name):
	// its addresses are the record's, and their reverse names point at that name.
	e, _ := v.names.get(heads[0])
	primary := heads[0] + v.zone
	var revs []string
	for _, a := range e.v4 {
		revs = append(revs, reverseName(netip.AddrFrom4(a)))
	}
	for _, a := range e.v6 {
		revs = append(revs, reverseName(netip.AddrFrom16(a)))
	}
	for _, rev := range revs {
		if _, sh := v.shared[rev]; sh {
			return nil, false
		}
		if p, _ := v.ptr.get(rev); p != primary {
			return nil, false
		}
	}
	out := *v
	ne, pe := v.names.edit(), v.ptr.edit()
	for _, f := range forms {
		ne.del(f)
	}
	for _, rev := range revs {
		pe.del(rev)
	}
	out.names, out.ptr = ne.done(), pe.done()
	out.recs = v.recs.without(shard, at)
	out.records--
	out.nameCount -= len(heads)
	return &out, true
}

// reverseName is the PTR name of a, as add makes it.
func reverseName(a netip.Addr) string {
	rev, _ := dns.ReverseAddr(a.String())
	return rev
}

// recordGetter is a store that reads one record (records.Local).
type recordGetter interface {
	Get(ctx context.Context, network, containerID, ifName string) (records.Record, error)
}

// applyRecord brings the view of network up to date after the record of containerID and
// ifName was written or deleted: incrementally when withRecord or withoutRecord can, else
// by re-reading the network.
func (s *Server) applyRecord(ctx context.Context, network, containerID, ifName string) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	switch s.changeRecord(ctx, network, containerID, ifName) {
	case recordAdded:
		s.metrics.incremental.Add(1)
		return nil
	case recordDeleted:
		s.metrics.incrementalDeletes.Add(1)
		return nil
	}
	return s.updateLocked(ctx, []string{network})
}

// recordChange is what changeRecord did.
type recordChange int

const (
	recordRebuild recordChange = iota // nothing: the network must be re-read
	recordAdded
	recordDeleted
)

// changeRecord adds the record to its network's view, or removes it when the store no
// longer has it, when withRecord or withoutRecord can; callers hold updateMu.
func (s *Server) changeRecord(ctx context.Context, network, containerID, ifName string) recordChange {
	g, ok := s.store.(recordGetter)
	if !ok {
		return recordRebuild
	}
	snap := s.snap.Load()
	v := snap.nets[network]
	if v == nil {
		return recordRebuild
	}
	r, err := g.Get(ctx, network, containerID, ifName)
	gone := errors.Is(err, records.ErrNoRecord)
	if err != nil && !gone {
		s.metrics.storeErrors.Add(1)
		return recordRebuild
	}
	nets, err := s.store.Networks(ctx)
	if err != nil {
		return recordRebuild
	}
	i := slices.IndexFunc(nets, func(n records.Network) bool { return n.Name == network })
	if i < 0 || !sameNetwork(nets[i], v.src) {
		return recordRebuild
	}
	var nv *netView
	change := recordAdded
	if gone {
		nv, ok = v.withoutRecord(containerID, ifName)
		change = recordDeleted
	} else {
		nv, ok = v.withRecord(r)
	}
	if !ok {
		return recordRebuild
	}
	if nv != v {
		s.publish(snap.with(map[string]*netView{network: nv}, s.gateways))
	}
	return change
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

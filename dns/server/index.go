package server

import (
	"cmp"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// snapshot is an immutable view of every network the server serves. Queries load it
// through an atomic pointer; updates build a new one, sharing the netViews of networks that
// did not change.
type snapshot struct {
	nets      map[string]*netView
	byGateway map[netip.Addr][]*netView
	gateways  []netip.Addr // sorted; the addresses to listen on
	records   int
	names     int // names indexed, all networks
}

// netView is one network's index: lookups are map reads, nothing scans the names.
type netView struct {
	name      string
	zone      string // the search domain as a lowercase FQDN, "dns.moor."
	zoneWire  []byte // zone in wire format, for the fast path's SOA (nil: the chain answers)
	subnets   []netip.Prefix
	internal  bool
	upstreams []string // nil: the server's
	// names maps every lowercase FQDN a client may ask ("web.", "web.<network>.",
	// "web.<domain>.") to its addresses.
	names shardMap[*entry]
	// ptr maps a reverse name ("5.0.10.127.in-addr.arpa.") to the primary FQDN.
	ptr     shardMap[string]
	records int
	// src is the definition the view was built from; recs holds, for every record, a hash
	// of its container ID and interface and the names it added ("web.", heads of the
	// names' keys), sorted by hash (see withRecord and withoutRecord).
	src  records.Network
	recs recIndex
	// shared holds every name form and reverse name that more than one record (or two
	// names of one record) added: removing a record that added one of them is left to a
	// rebuild. Nil when there is none.
	shared map[string]struct{}
	// nameCount counts the record names indexed; skipped the records left out because the
	// network already held records.MaxNamesPerNetwork names (a store written by hand or
	// by another host: the plugin refuses such ADDs).
	nameCount, skipped int
}

// recordNames is what the view keeps of one record: its key's hash and the names it
// added, in the record's order, each as its "name." form (a head of a map key's string,
// so it costs no string memory of its own).
type recordNames struct {
	key   uint64
	names []string
}

func compareKey(r recordNames, key uint64) int { return cmp.Compare(r.key, key) }

// entry holds the addresses of one name. Addresses are arrays, so the slices hold no
// pointers for the collector to follow; the entries and addresses of a view are carved from
// a few large slices (see buildView).
type entry struct {
	v4 [][4]byte
	v6 [][16]byte
}

func emptySnapshot() *snapshot {
	return &snapshot{nets: map[string]*netView{}, byGateway: map[netip.Addr][]*netView{}}
}

// with returns a copy of s in which the named networks are replaced by views (nil view:
// removed). Unchanged networks are shared.
func (s *snapshot) with(views map[string]*netView, gateways map[string][]netip.Addr) *snapshot {
	out := &snapshot{nets: make(map[string]*netView, len(s.nets)+len(views))}
	for name, v := range s.nets {
		out.nets[name] = v
	}
	for name, v := range views {
		if v == nil {
			delete(out.nets, name)
		} else {
			out.nets[name] = v
		}
	}
	out.index(gateways)
	return out
}

// index fills byGateway, gateways and records from nets, given each network's gateways.
func (s *snapshot) index(gateways map[string][]netip.Addr) {
	s.byGateway = map[netip.Addr][]*netView{}
	s.records, s.names = 0, 0
	names := make([]string, 0, len(s.nets))
	for name := range s.nets {
		names = append(names, name)
	}
	slices.Sort(names) // stable order of views per gateway
	for _, name := range names {
		v := s.nets[name]
		s.records += v.records
		s.names += v.nameCount
		for _, gw := range gateways[name] {
			s.byGateway[gw] = append(s.byGateway[gw], v)
		}
	}
	s.gateways = s.gateways[:0]
	for gw := range s.byGateway {
		s.gateways = append(s.gateways, gw)
	}
	slices.SortFunc(s.gateways, func(a, b netip.Addr) int { return a.Compare(b) })
}

// scope returns the networks a query from src that arrived on gateway gw may see.
// The common case (one network per gateway) allocates nothing.
func (s *snapshot) scope(gw, src netip.Addr) []*netView {
	views := s.byGateway[gw]
	n := 0
	for _, v := range views {
		if v.contains(src) {
			n++
		}
	}
	if n == len(views) {
		return views
	}
	if n == 0 {
		return nil
	}
	out := make([]*netView, 0, n)
	for _, v := range views {
		if v.contains(src) {
			out = append(out, v)
		}
	}
	return out
}

func (v *netView) contains(a netip.Addr) bool {
	for _, p := range v.subnets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// inZone reports whether qname (lowercase FQDN) is the zone or below it.
func inZone(qname, zone string) bool {
	if !strings.HasSuffix(qname, zone) {
		return false
	}
	return len(qname) == len(zone) || qname[len(qname)-len(zone)-1] == '.'
}

// buildView indexes one network and its records, which it sorts in place. defaultDomain
// applies when the network sets none.
//
// Memory is what bounds a sidecar with many names, so the index is built compactly: the
// maps are sized once; the forms of one name share one entry and their keys one string
// ("web." is the head of "web.dns.moor.", the PTR target); entries and addresses are
// carved from one slice each. A name that several records hold gets an entry of its own
// on the first merge (copy on write: the shared entry stays as it was for the other forms).
func buildView(n records.Network, recs []records.Record, defaultDomain string) (*netView, []netip.Addr) {
	v := &netView{
		name:      n.Name,
		internal:  n.Internal,
		upstreams: n.Upstreams,
		records:   len(recs),
		src:       n,
	}
	domain := n.Domain
	if domain == "" {
		domain = defaultDomain
	}
	v.zone = dns.Fqdn(strings.ToLower(domain))
	v.zoneWire = zoneWire(v.zone)
	netLabel := networkLabel(n.Name)
	for _, sn := range n.Subnets {
		if p, err := records.Prefix(sn); err == nil {
			v.subnets = append(v.subnets, p)
		}
	}
	var gws []netip.Addr
	for _, g := range n.Gateways {
		if a, ok := netip.AddrFromSlice(g); ok {
			gws = append(gws, a.Unmap())
		}
	}
	// A stable order makes the primary name of a shared address deterministic.
	slices.SortFunc(recs, func(a, b records.Record) int {
		return cmp.Or(cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.IfName, b.IfName))
	})
	var names, ips int
	for _, r := range recs {
		names += len(r.Names)
		ips += len(r.IPs)
	}
	names = min(names, records.MaxNamesPerNetwork)
	forms := 2
	if netLabel != "" {
		forms = 3
	}
	v.names = newShardMap[*entry](names * forms)
	v.ptr = newShardMap[string](ips)
	b := &viewBuilder{
		v:          v,
		names:      &v.names,
		ptr:        &v.ptr,
		entries:    make([]entry, 0, names),
		v4:         make([][4]byte, 0, ips),
		v6:         make([][16]byte, 0, ips),
		heads:      make([]string, 0, names),
		ownsShared: true,
	}
	keyed := make([]recordNames, 0, len(recs))
	for _, r := range recs {
		rn := recordNames{key: recordHash(r.ContainerID, r.IfName)}
		if v.nameCount+len(r.Names) > records.MaxNamesPerNetwork {
			v.skipped++
		} else {
			rn.names = b.add(r, netLabel)
		}
		keyed = append(keyed, rn)
	}
	v.recs = newRecIndex(keyed)
	return v, gws
}

// networkLabel is the label a network adds to its names ("web.<network>."), "" when the
// network's name is not a valid DNS name.
func networkLabel(name string) string {
	if records.ValidName(name) == nil {
		return strings.ToLower(name)
	}
	return ""
}

// add indexes the names and addresses of one record in b's view and returns the names'
// "name." forms (see recordNames).
func (b *viewBuilder) add(r records.Record, netLabel string) []string {
	v := b.v
	v.nameCount += len(r.Names)
	v4, v6 := b.split(r.IPs) // shared by every name of the record
	start := len(b.heads)
	var primary string
	for i, name := range r.Names {
		e := b.entry(v4, v6)
		// One string holds "name.<zone>" and "name.<network>."; "name." is its head.
		withNet := netLabel != "" && len(name)+1+len(netLabel) <= maxNameLen
		var keys string
		if withNet {
			keys = name + "." + v.zone + name + "." + netLabel + "."
		} else {
			keys = name + "." + v.zone
		}
		inDomain := keys[:len(name)+1+len(v.zone)]
		b.heads = append(b.heads, keys[:len(name)+1])
		b.put(keys[:len(name)+1], e)
		b.put(inDomain, e)
		if withNet {
			b.put(keys[len(inDomain):], e)
		}
		if i == 0 {
			primary = inDomain
		}
	}
	for _, ip := range r.IPs {
		rev, err := dns.ReverseAddr(ip.String())
		if err != nil {
			continue
		}
		if _, ok := b.ptr.get(rev); !ok {
			b.ptr.set(rev, primary)
		} else {
			b.markShared(rev)
		}
	}
	return b.heads[start:len(b.heads):len(b.heads)]
}

// nameForms returns the keys of name's forms in a view of zone and netLabel, as add makes
// them: "name.", "name.<zone>" and, when it fits, "name.<network>.".
func nameForms(name, zone, netLabel string) []string {
	forms := []string{name + ".", name + "." + zone}
	if netLabel != "" && len(name)+1+len(netLabel) <= maxNameLen {
		forms = append(forms, name+"."+netLabel+".")
	}
	return forms
}

// put points fqdn at e, or, when another record already holds fqdn, at a new entry with
// the addresses of both (leaving out those it already has), and marks fqdn shared then.
// The scan is linear: an entry has the addresses of the few records that share a name. (A
// set per name cost more memory than the index itself on large networks.)
func (b *viewBuilder) put(fqdn string, e *entry) {
	have, _ := b.names.get(fqdn)
	switch {
	case have == nil:
		b.names.set(fqdn, e)
	case have != e: // (have == e: two forms of one name that coincide)
		b.markShared(fqdn)
		b.names.set(fqdn, &entry{v4: appendNew(have.v4, e.v4), v6: appendNew(have.v6, e.v6)})
	}
}

// markShared adds key to the view's shared set, copying the set first when the view
// shares it with the one it was copied from.
func (b *viewBuilder) markShared(key string) {
	v := b.v
	if !b.ownsShared {
		v.shared = maps.Clone(v.shared)
		b.ownsShared = true
	}
	if v.shared == nil {
		v.shared = map[string]struct{}{}
	}
	v.shared[key] = struct{}{}
}

// keyValues is a map a viewBuilder writes: a shardMap being built or a shardEdit.
type keyValues[V comparable] interface {
	get(key string) (V, bool)
	set(key string, v V)
}

// viewBuilder carves a view's entries, addresses and name heads from slices sized once.
// The slices it hands out have no room to grow: an append copies, so nothing carved is
// overwritten.
type viewBuilder struct {
	v       *netView
	names   keyValues[*entry] // where v's maps are written: v's own, or edits of a copy
	ptr     keyValues[string]
	entries []entry
	v4      [][4]byte
	v6      [][16]byte
	heads   []string
	// ownsShared is set when v.shared belongs to v alone (not to the view v was copied
	// from).
	ownsShared bool
}

// entry returns a new entry holding v4 and v6.
func (b *viewBuilder) entry(v4 [][4]byte, v6 [][16]byte) *entry {
	if len(b.entries) == cap(b.entries) {
		return &entry{v4: v4, v6: v6}
	}
	b.entries = append(b.entries, entry{v4: v4, v6: v6})
	return &b.entries[len(b.entries)-1]
}

// split returns a record's distinct addresses by family.
func (b *viewBuilder) split(ips []net.IP) (v4 [][4]byte, v6 [][16]byte) {
	start4, start6 := len(b.v4), len(b.v6)
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.Is4() {
			if x := a.As4(); !slices.Contains(b.v4[start4:], x) {
				b.v4 = append(b.v4, x)
			}
		} else if x := a.As16(); !slices.Contains(b.v6[start6:], x) {
			b.v6 = append(b.v6, x)
		}
	}
	return b.v4[start4:len(b.v4):len(b.v4)], b.v6[start6:len(b.v6):len(b.v6)]
}

// maxNameLen is the longest name in presentation form without the trailing dot.
const maxNameLen = 253

// appendNew returns have and the addresses of add it lacks, in a new slice when there are
// any (have may be shared with other names).
func appendNew[A comparable](have, add []A) []A {
	out := have[:len(have):len(have)]
	for _, a := range add {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// parseReverse turns an in-addr.arpa or ip6.arpa name (lowercase FQDN) into the address.
func parseReverse(qname string) (netip.Addr, bool) {
	const v4Suffix, v6Suffix = ".in-addr.arpa.", ".ip6.arpa."
	switch {
	case strings.HasSuffix(qname, v4Suffix):
		labels := strings.Split(strings.TrimSuffix(qname, v4Suffix), ".")
		if len(labels) != net.IPv4len {
			return netip.Addr{}, false
		}
		slices.Reverse(labels)
		a, err := netip.ParseAddr(strings.Join(labels, "."))
		return a, err == nil
	case strings.HasSuffix(qname, v6Suffix):
		nibbles := strings.Split(strings.TrimSuffix(qname, v6Suffix), ".")
		const nibblesPerAddr = 32
		if len(nibbles) != nibblesPerAddr {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, nb := range nibbles {
			if len(nb) != 1 {
				return netip.Addr{}, false
			}
			x := strings.IndexByte("0123456789abcdef", nb[0])
			if x < 0 {
				return netip.Addr{}, false
			}
			pos := nibblesPerAddr - 1 - i // nibbles are least significant first
			if pos%2 == 0 {
				b[pos/2] |= byte(x) << 4
			} else {
				b[pos/2] |= byte(x)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

package server

import (
	"cmp"
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
	names map[string]*entry
	// ptr maps a reverse name ("5.0.10.127.in-addr.arpa.") to the primary FQDN.
	ptr     map[string]string
	records int
	// nameCount counts the record names indexed; skipped the records left out because the
	// network already held records.MaxNamesPerNetwork names (a store written by hand or
	// by another host: the plugin refuses such ADDs).
	nameCount, skipped int
}

// entry holds the addresses of one name; v4 addresses are 4 bytes long.
type entry struct {
	v4, v6 []net.IP
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

// buildView indexes one network and its records. defaultDomain applies when the network
// sets none.
func buildView(n records.Network, recs []records.Record, defaultDomain string) (*netView, []netip.Addr) {
	v := &netView{
		name:      n.Name,
		internal:  n.Internal,
		upstreams: n.Upstreams,
		names:     map[string]*entry{},
		ptr:       map[string]string{},
		records:   len(recs),
	}
	domain := n.Domain
	if domain == "" {
		domain = defaultDomain
	}
	v.zone = dns.Fqdn(strings.ToLower(domain))
	v.zoneWire = zoneWire(v.zone)
	netLabel := ""
	if records.ValidName(n.Name) == nil {
		netLabel = strings.ToLower(n.Name)
	}
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
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b records.Record) int {
		return cmp.Or(cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.IfName, b.IfName))
	})
	for _, r := range recs {
		v4, v6 := splitIPs(r.IPs) // shared by every name of the record
		if v.nameCount+len(r.Names) > records.MaxNamesPerNetwork {
			v.skipped++
			continue
		}
		v.nameCount += len(r.Names)
		for _, name := range r.Names {
			forms := []string{name + ".", name + "." + v.zone}
			if netLabel != "" && len(name)+1+len(netLabel) <= maxNameLen {
				forms = append(forms, name+"."+netLabel+".")
			}
			for _, f := range forms {
				v.add(f, v4, v6)
			}
		}
		primary := r.Names[0] + "." + v.zone
		for _, ip := range r.IPs {
			rev, err := dns.ReverseAddr(ip.String())
			if err != nil {
				continue
			}
			if _, ok := v.ptr[rev]; !ok {
				v.ptr[rev] = primary
			}
		}
	}
	return v, gws
}

// maxNameLen is the longest name in presentation form without the trailing dot.
const maxNameLen = 253

// add appends a record's addresses to fqdn's entry, leaving out those it already has. The
// scan is linear: an entry has the addresses of the few records that share a name. (A set
// per name cost more memory than the index itself on large networks.)
func (v *netView) add(fqdn string, v4, v6 []net.IP) {
	e := v.names[fqdn]
	if e == nil {
		// A name of one record, the usual case, shares the record's slices; one that
		// several records hold gets slices of its own on the first append below.
		v.names[fqdn] = &entry{v4: v4[:len(v4):len(v4)], v6: v6[:len(v6):len(v6)]}
		return
	}
	e.v4 = appendNew(e.v4, v4)
	e.v6 = appendNew(e.v6, v6)
}

func appendNew(have, add []net.IP) []net.IP {
	for _, ip := range add {
		if !slices.ContainsFunc(have, ip.Equal) {
			have = append(have, ip)
		}
	}
	return have
}

// splitIPs returns a record's distinct addresses by family, IPv4 ones 4 bytes long.
func splitIPs(ips []net.IP) (v4, v6 []net.IP) {
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		a = a.Unmap()
		n := net.IP(a.AsSlice())
		if a.Is4() {
			v4 = appendNew(v4, []net.IP{n})
		} else {
			v6 = appendNew(v6, []net.IP{n})
		}
	}
	return v4, v6
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

package etcdrecords

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moornet/moor/dns/records"
)

// maxUpstreams bounds a network's upstream resolvers.
const maxUpstreams = 8

// networkJSON and recordJSON are the stored forms; addresses are strings.
type networkJSON struct {
	Name      string   `json:"name"`
	Domain    string   `json:"domain,omitempty"`
	Gateways  []string `json:"gateways"`
	Subnets   []string `json:"subnets"`
	Internal  bool     `json:"internal,omitempty"`
	Upstreams []string `json:"upstreams,omitempty"`
}

type recordJSON struct {
	Network     string   `json:"network"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifName"`
	Names       []string `json:"names"`
	IPs         []string `json:"ips"`
}

// usable returns the unmapped address of ip, or false for nothing usable.
func usable(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.IsValid() && !a.IsUnspecified()
}

func encodeRecord(r records.Record) (recordJSON, error) {
	if err := records.ValidKey(r.Network, r.ContainerID, r.IfName); err != nil {
		return recordJSON{}, err
	}
	out := recordJSON{Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName}
	for _, name := range r.Names {
		if err := records.ValidName(name); err != nil {
			return recordJSON{}, err
		}
		if name = strings.ToLower(name); !slices.Contains(out.Names, name) {
			out.Names = append(out.Names, name)
		}
	}
	if len(out.Names) == 0 {
		return recordJSON{}, &records.InvalidRecordError{Field: "names", Reason: "a record needs at least one name"}
	}
	for _, ip := range r.IPs {
		a, ok := usable(ip)
		if !ok {
			return recordJSON{}, &records.InvalidRecordError{Field: "ips", Value: ip.String(), Reason: "not a usable IP address"}
		}
		if s := a.String(); !slices.Contains(out.IPs, s) {
			out.IPs = append(out.IPs, s)
		}
	}
	if len(out.IPs) == 0 {
		return recordJSON{}, &records.InvalidRecordError{Field: "ips", Reason: "a record needs at least one address"}
	}
	return out, nil
}

func decodeRecord(data []byte) (records.Record, error) {
	var rf recordJSON
	if err := jsonUnmarshal(data, &rf); err != nil {
		return records.Record{}, err
	}
	r := records.Record{Network: rf.Network, ContainerID: rf.ContainerID, IfName: rf.IfName, Names: rf.Names}
	for _, s := range rf.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return records.Record{}, err
		}
		r.IPs = append(r.IPs, net.IP(a.AsSlice()))
	}
	// Re-validate what was read: a hand-edited key must not reach the server.
	if _, err := encodeRecord(r); err != nil {
		return records.Record{}, err
	}
	return r, nil
}

func encodeNetwork(n records.Network) (networkJSON, error) {
	if err := records.ValidNetworkName(n.Name); err != nil {
		return networkJSON{}, err
	}
	out := networkJSON{Name: n.Name, Internal: n.Internal}
	if n.Domain != "" {
		d := strings.ToLower(strings.TrimSuffix(n.Domain, "."))
		if err := records.ValidName(d); err != nil {
			return networkJSON{}, &records.InvalidNameError{Field: "domain", Value: n.Domain, Reason: err.Error()}
		}
		out.Domain = d
	}
	for _, gw := range n.Gateways {
		a, ok := usable(gw)
		if !ok || a.IsMulticast() {
			return networkJSON{}, &records.InvalidRecordError{Field: "gateways", Value: gw.String(), Reason: "not a unicast address"}
		}
		out.Gateways = append(out.Gateways, a.String())
	}
	if len(out.Gateways) == 0 {
		return networkJSON{}, &records.InvalidRecordError{Field: "gateways", Reason: "a network needs at least one gateway address to listen on"}
	}
	for _, sn := range n.Subnets {
		if sn == nil {
			return networkJSON{}, &records.InvalidRecordError{Field: "subnets", Value: "<nil>", Reason: "missing subnet"}
		}
		p, err := records.Prefix(sn)
		if err != nil {
			return networkJSON{}, err
		}
		out.Subnets = append(out.Subnets, p.String())
	}
	if len(out.Subnets) == 0 {
		return networkJSON{}, &records.InvalidRecordError{Field: "subnets", Reason: "a network needs at least one client subnet"}
	}
	if len(n.Upstreams) > maxUpstreams {
		return networkJSON{}, &records.InvalidRecordError{Field: "upstreams", Value: strings.Join(n.Upstreams, ","), Reason: "more than " + strconv.Itoa(maxUpstreams) + " servers"}
	}
	for _, u := range n.Upstreams {
		hp, err := records.NormalizeUpstream(u)
		if err != nil {
			return networkJSON{}, err
		}
		out.Upstreams = append(out.Upstreams, hp)
	}
	return out, nil
}

func decodeNetwork(data []byte) (records.Network, error) {
	var nf networkJSON
	if err := jsonUnmarshal(data, &nf); err != nil {
		return records.Network{}, err
	}
	n := records.Network{Name: nf.Name, Domain: nf.Domain, Internal: nf.Internal, Upstreams: nf.Upstreams}
	for _, s := range nf.Gateways {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return records.Network{}, err
		}
		n.Gateways = append(n.Gateways, net.IP(a.AsSlice()))
	}
	for _, s := range nf.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return records.Network{}, err
		}
		n.Subnets = append(n.Subnets, &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	if _, err := encodeNetwork(n); err != nil {
		return records.Network{}, err
	}
	return n, nil
}

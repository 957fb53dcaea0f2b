package view

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/plugins/firewall"
)

// Inspect is `moor network inspect`'s document for one network: `docker network
// inspect`'s fields plus Live and File.
type Inspect struct {
	Name       string              `json:"Name"`
	ID         string              `json:"Id"`
	Created    string              `json:"Created"`
	Scope      string              `json:"Scope"`
	Driver     string              `json:"Driver"`
	EnableIPv6 bool                `json:"EnableIPv6"`
	IPAM       IPAM                `json:"IPAM"`
	Internal   bool                `json:"Internal"`
	Containers map[string]Endpoint `json:"Containers"`
	Options    map[string]string   `json:"Options"`
	Labels     map[string]string   `json:"Labels"`
	Status     Status              `json:"Status"`
	Live       Live                `json:"Live"`
	File       string              `json:"File"`
}

// IPAM is the network's address configuration.
type IPAM struct {
	Driver  string            `json:"Driver"`
	Options map[string]string `json:"Options"`
	Config  []IPAMConfig      `json:"Config"`
}

// IPAMConfig is one subnet.
type IPAMConfig struct {
	Subnet  string `json:"Subnet"`
	IPRange string `json:"IPRange,omitempty"`
	Gateway string `json:"Gateway,omitempty"`
}

// Endpoint is one container interface on the network.
type Endpoint struct {
	Name        string `json:"Name"`
	EndpointID  string `json:"EndpointID"`
	MacAddress  string `json:"MacAddress"`
	IPv4Address string `json:"IPv4Address"`
	IPv6Address string `json:"IPv6Address"`
	Interface   string `json:"Interface"`
	Netns       string `json:"Netns,omitempty"`
	// Shaping is the bandwidth limit in force on a bridge attachment (tbf on its host
	// veth and ifb), read from the kernel; absent when it is not shaped.
	Shaping *shaping.Limits `json:"Shaping,omitempty"`
}

// Status is Docker's Status section.
type Status struct {
	IPAM StatusIPAM `json:"IPAM"`
}

// StatusIPAM holds the address usage per subnet.
type StatusIPAM struct {
	Subnets map[string]SubnetStatus `json:"Subnets"`
}

// SubnetStatus is the usage of one subnet.
type SubnetStatus struct {
	IPsInUse            uint64 `json:"IPsInUse"`
	DynamicIPsAvailable uint64 `json:"DynamicIPsAvailable"`
}

// Live is what the kernel and the stores say now.
type Live struct {
	Bridge   *state.LinkState `json:"Bridge,omitempty"`
	Parent   *state.LinkState `json:"Parent,omitempty"`
	Firewall *FirewallLive    `json:"Firewall,omitempty"`
	DNS      *DNSLive         `json:"DNS,omitempty"`
	Errors   []string         `json:"Errors,omitempty"`
}

// FirewallLive is the state of the network's firewall rules. Missing lists the missing
// rules while containers are attached (before the first ADD there are none to miss).
type FirewallLive struct {
	Backend      string   `json:"Backend"`
	RulesPresent bool     `json:"RulesPresent"`
	Missing      []string `json:"Missing,omitempty"`
}

// DNSLive is the state of the DNS sidecar for the network.
type DNSLive struct {
	Socket    string `json:"Socket"`
	Answering bool   `json:"Answering"`
	Records   int    `json:"Records"`
}

// Inspect builds the document of one network.
func (s Source) Inspect(ctx context.Context, n *conflist.Network) Inspect {
	doc := Inspect{
		Name: n.Name, ID: n.ID, Created: created(n), Scope: scopeOf(n.Driver), Driver: n.Driver,
		Internal: n.Conf.Internal, Containers: map[string]Endpoint{}, Options: n.Options(),
		Labels: n.Labels, File: n.File,
		IPAM:   IPAM{Driver: n.IPAMType, Options: n.IPAMOptions(), Config: []IPAMConfig{}},
		Status: Status{IPAM: StatusIPAM{Subnets: map[string]SubnetStatus{}}},
	}
	if doc.Labels == nil {
		doc.Labels = map[string]string{}
	}
	if n.IPAMErr != nil {
		doc.Live.Errors = append(doc.Live.Errors, "ipam: "+n.IPAMErr.Error())
	}
	atts, err := s.Attachments(ctx, n)
	if err != nil {
		doc.Live.Errors = append(doc.Live.Errors, err.Error())
	}
	doc.Containers = s.endpoints(n, atts)
	if n.Driver == conflist.DriverBridge {
		s.liveShaping(n, atts, doc.Containers)
	}
	if n.IPAM != nil {
		doc.IPAM.Config = ipamConfig(n.IPAM)
		doc.Status.IPAM.Subnets = usage(n.IPAM, atts)
		subnets, _ := SubnetsAndGateways(n)
		doc.EnableIPv6 = hasIPv6(subnets)
	}
	s.live(ctx, n, atts, &doc.Live)
	return doc
}

func (s Source) endpoints(n *conflist.Network, atts []store.Attachment) map[string]Endpoint {
	perContainer := map[string]int{}
	for _, a := range atts {
		perContainer[a.ContainerID]++
	}
	out := map[string]Endpoint{}
	for _, a := range atts {
		e := Endpoint{
			Name: a.ContainerName, EndpointID: state.EndpointID(n.Name, a.ContainerID, a.IfName),
			MacAddress: a.MAC, Interface: a.IfName, Netns: a.Netns,
		}
		if e.MacAddress == "" {
			e.MacAddress = s.cachedMAC(n, a)
		}
		for _, ip := range a.IPs {
			if ip.Addr().Is4() && e.IPv4Address == "" {
				e.IPv4Address = ip.String()
			}
			if ip.Addr().Is6() && e.IPv6Address == "" {
				e.IPv6Address = ip.String()
			}
		}
		key := a.ContainerID
		if perContainer[key] > 1 {
			key += "/" + a.IfName
		}
		out[key] = e
	}
	return out
}

// cachedMAC is the MAC of the attachment's container interface in the cached result.
func (s Source) cachedMAC(n *conflist.Network, a store.Attachment) string {
	if s.CachedResult == nil {
		return ""
	}
	res, err := s.CachedResult(n.List, a.ContainerID, a.IfName)
	if err != nil || res == nil {
		return ""
	}
	for _, iface := range res.Interfaces {
		if iface.Sandbox != "" && iface.Name == a.IfName {
			return iface.Mac
		}
	}
	return ""
}

func ipamConfig(cfg *config.Config) []IPAMConfig {
	var out []IPAMConfig
	for _, set := range cfg.Ranges {
		for _, r := range set {
			c := IPAMConfig{Subnet: r.Subnet.String(), IPRange: ipRange(r)}
			if r.Gateway.IsValid() {
				c.Gateway = r.Gateway.String()
			}
			out = append(out, c)
		}
	}
	for _, a := range cfg.Addresses {
		c := IPAMConfig{Subnet: a.Address.Masked().String(), IPRange: netip.PrefixFrom(a.Address.Addr(), a.Address.Addr().BitLen()).String()}
		if a.Gateway.IsValid() {
			c.Gateway = a.Gateway.String()
		}
		out = append(out, c)
	}
	return out
}

// ipRange renders a range that does not span its whole subnet: as a CIDR block when it is
// one (give or take the network and broadcast addresses, which are never handed out), else
// as "start-end".
func ipRange(r config.Range) string {
	first, last := defaultBounds(r.Subnet)
	if r.RangeStart == first && r.RangeEnd == last {
		return ""
	}
	for bits := r.Subnet.Bits(); bits <= r.Subnet.Addr().BitLen(); bits++ {
		block := netip.PrefixFrom(r.RangeStart, bits).Masked()
		bf, bl := block.Addr(), lastOf(block)
		startOK := r.RangeStart == bf || (bf == r.Subnet.Addr() && r.RangeStart == bf.Next())
		endOK := r.RangeEnd == bl || (r.Subnet.Addr().Is4() && bl == lastOf(r.Subnet) && r.RangeEnd == bl.Prev())
		if startOK && endOK {
			return block.String()
		}
	}
	return r.RangeStart.String() + "-" + r.RangeEnd.String()
}

// defaultBounds are host-local's default range of a subnet.
func defaultBounds(p netip.Prefix) (netip.Addr, netip.Addr) {
	last := lastOf(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return p.Addr().Next(), last
}

func lastOf(p netip.Prefix) netip.Addr { return store.LastAddr(p) }

// usage computes Status.IPAM.Subnets.
func usage(cfg *config.Config, atts []store.Attachment) map[string]SubnetStatus {
	held := map[netip.Addr]bool{}
	for _, a := range atts {
		for _, ip := range a.IPs {
			held[ip.Addr()] = true
		}
	}
	type acc struct {
		avail store.Count
		skips map[netip.Addr]bool
	}
	per := map[netip.Prefix]*acc{}
	get := func(p netip.Prefix) *acc {
		if per[p] == nil {
			per[p] = &acc{skips: map[netip.Addr]bool{}}
		}
		return per[p]
	}
	for _, set := range cfg.Ranges {
		for _, r := range set {
			sr := storeRange(r)
			a := get(r.Subnet)
			a.avail = a.avail.Add(sr.Size())
			for addr := range held {
				if sr.Contains(addr) && !sr.Skips(addr) {
					a.avail = a.avail.Sub(store.CountOf(1))
				}
			}
			for _, skip := range sr.Skip {
				if r.Subnet.Contains(skip) {
					a.skips[skip] = true
				}
			}
		}
	}
	for _, s := range cfg.Addresses {
		get(s.Address.Masked())
	}
	out := map[string]SubnetStatus{}
	for p, a := range per {
		inUse := uint64(len(a.skips))
		for addr := range held {
			if p.Contains(addr) && !a.skips[addr] {
				inUse++
			}
		}
		out[p.String()] = SubnetStatus{IPsInUse: inUse, DynamicIPsAvailable: a.avail.Uint64()}
	}
	return out
}

// storeRange is the block moor-ipam hands out from for a range: the gateway and, for
// IPv4, the network and broadcast addresses are skipped (ipam/allocator toPool).
func storeRange(r config.Range) store.Range {
	skip := []netip.Addr{r.Gateway}
	if r.Subnet.Addr().Is4() {
		skip = append(skip, r.Subnet.Addr(), store.LastAddr(r.Subnet))
	}
	return store.Range{Subnet: r.Subnet, First: r.RangeStart, Last: r.RangeEnd, Skip: skip}
}

// live fills the Live section.
func (s Source) live(ctx context.Context, n *conflist.Network, atts []store.Attachment, l *Live) {
	note := func(what string, err error) { l.Errors = append(l.Errors, fmt.Sprintf("%s: %v", what, err)) }
	switch {
	case n.Driver == conflist.DriverBridge && n.Conf.Bridge != "":
		if st, err := state.Link(s.Host, n.Conf.Bridge); err != nil {
			note("bridge", err)
		} else {
			l.Bridge = &st
		}
		if n.IPAM != nil {
			s.liveFirewall(n, atts, l)
		}
	case n.Driver == conflist.DriverMacvlan && n.Conf.Master != "":
		if st, err := state.Link(s.Host, n.Conf.Master); err != nil {
			note("parent", err)
		} else {
			l.Parent = &st
		}
	}
	if n.DNS != nil {
		dns := s.DNS.For(n)
		d := &DNSLive{Socket: dns.ControlSocket(), Answering: dns.Answering()}
		count, err := dns.Records(ctx, n.Name)
		d.Records = count
		if err != nil {
			note("dns", err)
		}
		l.DNS = d
	}
}

// liveShaping fills each bridge endpoint's Shaping from its host veth's qdiscs.
func (s Source) liveShaping(n *conflist.Network, atts []store.Attachment, eps map[string]Endpoint) {
	if len(atts) == 0 {
		return
	}
	nl, err := s.Host.Netlink()
	if err != nil {
		return
	}
	defer nl.Close()
	for _, a := range atts {
		key := a.ContainerID
		if _, ok := eps[key+"/"+a.IfName]; ok {
			key += "/" + a.IfName
		}
		e, ok := eps[key]
		if !ok {
			continue
		}
		port, err := nl.LinkByName(state.HostAltName(n.Name, a.ContainerID, a.IfName))
		if err != nil {
			continue
		}
		e.Shaping = shaping.Read(nl, port, shaping.IfbFor(n.Name, a.ContainerID, a.IfName))
		eps[key] = e
	}
}

func (s Source) liveFirewall(n *conflist.Network, atts []store.Attachment, l *Live) {
	fw, err := state.DetectFirewall(s.Host, n)
	if err != nil {
		l.Errors = append(l.Errors, "firewall: "+err.Error())
		return
	}
	fl := &FirewallLive{Backend: fw.Name()}
	err = fw.CheckNetwork(state.FirewallNetwork(n, atts))
	var missing *firewall.MissingRulesError
	switch {
	case err == nil:
		fl.RulesPresent = true
	case errors.As(err, &missing):
		if len(atts) > 0 {
			// Without attachments the rules may never have been made: not worth a list.
			fl.Missing = missing.Missing
		}
	default:
		l.Errors = append(l.Errors, "firewall: "+err.Error())
	}
	l.Firewall = fl
}

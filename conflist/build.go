package conflist

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
)

// CNIVersion is the newest version a written config offers (cniVersions).
const CNIVersion = "1.1.0"

// CompatVersion is the written config's cniVersion, for runtimes whose libcni ignores
// cniVersions.
const CompatVersion = "1.0.0"

// KV is one k=v flag value, in the order given.
type KV struct{ Key, Value string }

// Spec is what `moor network create` was asked for.
type Spec struct {
	Name         string
	Driver       string
	Subnets      []string
	Gateways     []string
	IPRanges     []string
	Internal     bool
	IPv6         bool
	Opts         []KV
	IPAMOpts     []KV
	Labels       []KV
	DNS          *bool // nil: the driver's default
	DNSDomain    string
	DNSUpstreams []string
}

// InvalidError: a flag value that cannot work (the CLI exits 2, a usage error).
type InvalidError struct {
	Flag, Value, Reason string
}

func (e *InvalidError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Flag, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", e.Flag, e.Value, e.Reason)
}

// UnavailableError: a driver moor does not have yet.
type UnavailableError struct{ Driver string }

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("driver %q is not yet available in this version of moor", e.Driver)
}

// Result is the config list to write and what was chosen.
type Result struct {
	Data    []byte         // the conflist, indented, ending in a newline
	Subnets []netip.Prefix // the network's subnets
}

// Build checks spec and returns the config list. routes are held against bridge
// subnets only; networks against every driver's.
func Build(spec Spec, networks, routes []Taken) (*Result, error) {
	if err := ValidName(spec.Name); err != nil {
		return nil, &InvalidError{Flag: "NAME", Reason: err.Error()}
	}
	driver, err := driverPlugin(spec)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	if spec.Driver == DriverBridge || spec.Driver == DriverMacvlan {
		taken := networks
		if spec.Driver == DriverBridge {
			taken = append(append([]Taken(nil), networks...), routes...)
		}
		ipam, subnets, err := buildIPAM(spec, taken)
		if err != nil {
			return nil, err
		}
		driver = driver.set("ipam", ipam)
		res.Subnets = subnets
	} else if err := noAddressFlags(spec); err != nil {
		return nil, err
	}
	plugins := []any{driver}
	dns, err := wantDNS(spec)
	if err != nil {
		return nil, err
	}
	if dns {
		entry, err := dnsEntry(spec)
		if err != nil {
			return nil, err
		}
		plugins = append(plugins, entry)
	}
	list := object{{"cniVersion", CompatVersion}, {"cniVersions", []string{CompatVersion, CNIVersion}}, {"name", spec.Name}}
	if len(spec.Labels) > 0 {
		labels, err := labelObject(spec.Labels)
		if err != nil {
			return nil, err
		}
		list = list.set("moor", object{{"labels", labels}})
	}
	list = list.set("plugins", plugins)
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	res.Data = append(data, '\n')
	if _, err := Parse("", res.Data); err != nil {
		return nil, fmt.Errorf("the generated config does not parse (a bug): %w", err)
	}
	return res, nil
}

// driverPlugin builds the first plugin of the list with the driver's fields.
func driverPlugin(spec Spec) (object, error) {
	opts, err := driverFields(spec.Driver, spec.Opts)
	switch spec.Driver {
	case DriverOverlay:
		return nil, &UnavailableError{Driver: spec.Driver}
	case DriverBridge, DriverMacvlan, DriverHost, DriverNone:
	default:
		return nil, &InvalidError{Flag: "--driver", Value: spec.Driver, Reason: "must be bridge, macvlan, overlay, host or none"}
	}
	if err != nil {
		return nil, err
	}
	p := object{{"type", TypePrefix + spec.Driver}}
	switch spec.Driver {
	case DriverBridge:
		bridge, ok := opts.get("bridge")
		if !ok {
			bridge = DefaultBridgeName(spec.Name)
		}
		out := !spec.Internal && !isolatedMode(opts)
		p = p.set("bridge", bridge).set("isGateway", true).set("isDefaultGateway", out).
			set("ipMasq", out).set("internal", spec.Internal)
		for _, f := range opts {
			if f.Key == "ipMasq" && spec.Internal && f.Value == true {
				return nil, &InvalidError{Flag: "--opt", Value: "ipMasq=true", Reason: "an --internal network has no masquerade"}
			}
			if f.Key == "ipMasq" && !out && f.Value == true {
				return nil, &InvalidError{Flag: "--opt", Value: "ipMasq=true", Reason: "a gateway mode \"isolated\" has no masquerade"}
			}
			p = p.set(f.Key, f.Value)
		}
		p = p.set("capabilities", object{{"portMappings", true}, {"ips", true}, {"bandwidth", true}})
	case DriverMacvlan:
		if spec.Internal {
			return nil, &InvalidError{Flag: "--internal", Reason: "only the bridge driver has internal networks"}
		}
		p = append(p, opts...)
		p = p.set("capabilities", object{{"ips", true}, {"bandwidth", true}})
	default:
		p = append(p, opts...)
	}
	return p, nil
}

// isolatedSpec is isolatedMode for the --opt pairs as given (own or Docker's names).
func isolatedSpec(spec Spec) bool {
	var opts object
	for _, kv := range spec.Opts {
		key := kv.Key
		if own, ok := dockerBridgeNames[key]; ok {
			key = own
		}
		opts = opts.set(key, kv.Value)
	}
	return isolatedMode(opts)
}

// isolatedMode tells whether a family's gateway mode is "isolated": such a network
// gets neither masquerade nor a default route (moor-bridge refuses both with it).
func isolatedMode(opts object) bool {
	for _, k := range []string{"gatewayModeIPv4", "gatewayModeIPv6"} {
		if v, ok := opts.get(k); ok && v == "isolated" {
			return true
		}
	}
	return false
}

// noAddressFlags refuses address flags for drivers without IPAM.
func noAddressFlags(spec Spec) error {
	for _, f := range []struct {
		flag string
		set  bool
	}{
		{"--subnet", len(spec.Subnets) > 0}, {"--gateway", len(spec.Gateways) > 0},
		{"--ip-range", len(spec.IPRanges) > 0}, {"--ipv6", spec.IPv6},
		{"--internal", spec.Internal}, {"--ipam-opt", len(spec.IPAMOpts) > 0},
	} {
		if f.set {
			return &InvalidError{Flag: f.flag, Reason: fmt.Sprintf("the %s driver has no addresses of its own", spec.Driver)}
		}
	}
	return nil
}

// wantDNS applies the per-driver default of --dns / --disable-dns.
func wantDNS(spec Spec) (bool, error) {
	var on bool
	switch spec.Driver {
	case DriverBridge:
		on = spec.DNS == nil || *spec.DNS
		if isolatedSpec(spec) {
			// The DNS server listens on the gateway, which an isolated family does not have.
			if spec.DNS != nil && *spec.DNS {
				return false, &InvalidError{Flag: "--dns", Reason: `a gateway mode "isolated" puts no gateway on the bridge for the DNS server to listen on`}
			}
			on = false
		}
	case DriverMacvlan:
		on = spec.DNS != nil && *spec.DNS
	default:
		if spec.DNS != nil && *spec.DNS {
			return false, &InvalidError{Flag: "--dns", Reason: fmt.Sprintf("the %s driver has no addresses to serve names for", spec.Driver)}
		}
		if spec.DNSDomain != "" || len(spec.DNSUpstreams) > 0 {
			return false, &InvalidError{Flag: "--dns-domain/--dns-upstream", Reason: fmt.Sprintf("the %s driver has no DNS", spec.Driver)}
		}
		return false, nil
	}
	if !on && (spec.DNSDomain != "" || len(spec.DNSUpstreams) > 0) {
		return false, &InvalidError{Flag: "--dns-domain/--dns-upstream", Reason: "the network has no DNS"}
	}
	return on, nil
}

// dnsEntry is the moor-dns entry: aliases capability, domain, internal (no forwarding
// out of an internal network), upstreams.
func dnsEntry(spec Spec) (object, error) {
	entry := object{{"type", DNSType}}
	if spec.DNSDomain != "" {
		if err := records.ValidName(spec.DNSDomain); err != nil {
			return nil, &InvalidError{Flag: "--dns-domain", Value: spec.DNSDomain, Reason: err.Error()}
		}
		entry = entry.set("domain", spec.DNSDomain)
	}
	if spec.Internal {
		entry = entry.set("internal", true)
	}
	if len(spec.DNSUpstreams) > 0 {
		for _, u := range spec.DNSUpstreams {
			if _, err := records.NormalizeUpstream(u); err != nil {
				return nil, &InvalidError{Flag: "--dns-upstream", Value: u, Reason: "not an IP address or IP:port"}
			}
		}
		entry = entry.set("upstreams", spec.DNSUpstreams)
	}
	return entry.set("capabilities", object{{"aliases", true}}), nil
}

func labelObject(kvs []KV) (object, error) {
	var o object
	for _, kv := range kvs {
		if kv.Key == "" {
			return nil, &InvalidError{Flag: "--label", Value: kv.Key + "=" + kv.Value, Reason: "empty key"}
		}
		o = o.set(kv.Key, kv.Value)
	}
	sort.SliceStable(o, func(i, j int) bool { return o[i].Key < o[j].Key })
	return o, nil
}

// buildIPAM returns the moor-ipam section and the subnets it allocates from.
func buildIPAM(spec Spec, taken []Taken) (object, []netip.Prefix, error) {
	subnets, err := chooseSubnets(spec, taken)
	if err != nil {
		return nil, nil, err
	}
	ranges, err := rangeSets(spec, subnets)
	if err != nil {
		return nil, nil, err
	}
	ipam := object{{"type", IPAMType}, {"ranges", ranges}}
	for _, kv := range spec.IPAMOpts {
		if !ipamOptions[kv.Key] {
			return nil, nil, &InvalidError{Flag: "--ipam-opt", Value: kv.Key + "=" + kv.Value, Reason: "unknown option (accepted: dataDir, resolvConf)"}
		}
		ipam = ipam.set(kv.Key, kv.Value)
	}
	// Let moor-ipam's own parser judge the result (gateways, ranges, paths).
	raw, err := json.Marshal(object{{"name", spec.Name}, {"cniVersion", CNIVersion}, {"ipam", ipam}})
	if err != nil {
		return nil, nil, err
	}
	if _, err := config.Parse(raw); err != nil {
		return nil, nil, &InvalidError{Flag: "address flags", Reason: err.Error()}
	}
	return ipam, subnets, nil
}

// chooseSubnets parses --subnet (at most one per family) or picks from the default pools,
// and checks them against what is taken.
func chooseSubnets(spec Spec, taken []Taken) ([]netip.Prefix, error) {
	var subnets []netip.Prefix
	seen := map[bool]netip.Prefix{}
	for _, s := range spec.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, &InvalidError{Flag: "--subnet", Value: s, Reason: "not a CIDR subnet"}
		}
		if p != p.Masked() {
			return nil, &InvalidError{Flag: "--subnet", Value: s, Reason: "host bits set; the network address is " + p.Masked().String()}
		}
		if prev, dup := seen[p.Addr().Is4()]; dup {
			return nil, &InvalidError{Flag: "--subnet", Value: s, Reason: fmt.Sprintf("a second %s subnet (after %s): give at most one IPv4 and one IPv6 subnet", familyName(p), prev)}
		}
		seen[p.Addr().Is4()] = p
		if err := checkFree(p, taken); err != nil {
			return nil, err
		}
		subnets = append(subnets, p)
	}
	if len(subnets) == 0 {
		p, err := nextFreeV4(taken)
		if err != nil {
			return nil, err
		}
		subnets = append(subnets, p)
	}
	if _, has6 := seen[false]; spec.IPv6 && !has6 {
		p, err := freeULA(spec.Name, taken)
		if err != nil {
			return nil, err
		}
		subnets = append(subnets, p)
	}
	return subnets, nil
}

// rangeSets builds one range set per subnet, with the gateway and ip-range that lie in it.
func rangeSets(spec Spec, subnets []netip.Prefix) ([][]object, error) {
	gateways := map[netip.Prefix]netip.Addr{}
	for _, g := range spec.Gateways {
		a, err := netip.ParseAddr(g)
		if err != nil {
			return nil, &InvalidError{Flag: "--gateway", Value: g, Reason: "not an IP address"}
		}
		s, ok := containing(subnets, netip.PrefixFrom(a, a.BitLen()))
		if !ok {
			return nil, &InvalidError{Flag: "--gateway", Value: g, Reason: "not in any subnet of the network (" + join(subnets) + ")"}
		}
		if _, dup := gateways[s]; dup {
			return nil, &InvalidError{Flag: "--gateway", Value: g, Reason: "a second gateway for subnet " + s.String()}
		}
		gateways[s] = a
	}
	ipRanges := map[netip.Prefix]netip.Prefix{}
	for _, r := range spec.IPRanges {
		p, err := netip.ParsePrefix(r)
		if err != nil || p != p.Masked() {
			return nil, &InvalidError{Flag: "--ip-range", Value: r, Reason: "not a CIDR block"}
		}
		s, ok := containing(subnets, p)
		if !ok {
			return nil, &InvalidError{Flag: "--ip-range", Value: r, Reason: "not inside any subnet of the network (" + join(subnets) + ")"}
		}
		if _, dup := ipRanges[s]; dup {
			return nil, &InvalidError{Flag: "--ip-range", Value: r, Reason: "a second range for subnet " + s.String()}
		}
		ipRanges[s] = p
	}
	var sets [][]object
	for _, s := range subnets {
		r := object{{"subnet", s.String()}}
		gw, ok := gateways[s]
		if !ok {
			gw = s.Addr().Next()
		}
		r = r.set("gateway", gw.String())
		if ipr, ok := ipRanges[s]; ok {
			start, end := usable(s, ipr)
			r = r.set("rangeStart", start.String()).set("rangeEnd", end.String())
		}
		sets = append(sets, []object{r})
	}
	return sets, nil
}

// containing returns the subnet that contains p.
func containing(subnets []netip.Prefix, p netip.Prefix) (netip.Prefix, bool) {
	for _, s := range subnets {
		if s.Addr().BitLen() == p.Addr().BitLen() && s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return s, true
		}
	}
	return netip.Prefix{}, false
}

// usable is the part of block r of subnet s that can be handed out: without the
// subnet's network address and, for IPv4, its broadcast address.
func usable(s, r netip.Prefix) (netip.Addr, netip.Addr) {
	start, end := r.Addr(), store.LastAddr(r)
	if start == s.Addr() {
		start = start.Next()
	}
	if s.Addr().Is4() && end == store.LastAddr(s) {
		end = end.Prev()
	}
	return start, end
}

// MarshalJSON writes the keys in order.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

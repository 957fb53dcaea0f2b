package config

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdconf"
)

// The JSON shapes, with addresses as strings so that errors can name field and value.
type rawRange struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

type rawRoute struct {
	Dst      string `json:"dst"`
	GW       string `json:"gw"`
	MTU      int    `json:"mtu"`
	AdvMSS   int    `json:"advmss"`
	Priority int    `json:"priority"`
	Table    *int   `json:"table"`
	Scope    *int   `json:"scope"`
}

type rawAddress struct {
	Address string `json:"address"`
	Gateway string `json:"gateway"`
}

type rawStore struct {
	Type string `json:"type"`
	// The fields of etcdconf.Fields, listed so that decoding errors name them plainly.
	Endpoints      []string        `json:"endpoints"`
	TLS            *etcdconf.TLS   `json:"tls"`
	DialTimeout    json.RawMessage `json:"dialTimeout"`
	RequestTimeout json.RawMessage `json:"requestTimeout"`
	Prefix         string          `json:"prefix"`
	LockTimeout    json.RawMessage `json:"lockTimeout"`
}

type rawIPAM struct {
	Type string `json:"type"`
	rawRange
	Ranges     [][]rawRange `json:"ranges"`
	Routes     []rawRoute   `json:"routes"`
	ResolvConf string       `json:"resolvConf"`
	DataDir    string       `json:"dataDir"`
	Addresses  []rawAddress `json:"addresses"`
	DNS        types.DNS    `json:"dns"`
	Store      rawStore     `json:"store"`
}

type rawTop struct {
	CNIVersion    string          `json:"cniVersion"`
	Name          string          `json:"name"`
	IPAM          json.RawMessage `json:"ipam"`
	RuntimeConfig struct {
		IPRanges json.RawMessage `json:"ipRanges"`
	} `json:"runtimeConfig"`
}

// Parse decodes a whole plugin config given as bytes (a tool's, or a test's) and returns
// its canonical ipam part. A plugin call uses FromNetConf instead: the framework has
// decoded the config and checked the name already.
func Parse(raw []byte) (*Config, error) {
	var top rawTop
	if err := decode(raw, &top, ""); err != nil {
		return nil, err
	}
	if !plugins.SpecName(top.Name) { // the spec's charset; the name also names a file
		return nil, invalid("name", top.Name, "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'")
	}
	return parseSection(top.CNIVersion, top.Name, top.IPAM, top.RuntimeConfig.IPRanges)
}

// FromNetConf returns the canonical ipam part of a config the framework loaded
// (plugins.LoadConf): the ipam section and runtimeConfig.ipRanges are read from it, not
// from the call's stdin again.
func FromNetConf(nc *plugins.NetConf) (*Config, error) {
	return parseSection(nc.CNIVersion, nc.Name, nc.IPAM.Raw, nc.RuntimeConfig.IPRanges)
}

// parseSection canonicalises an ipam section of network name.
func parseSection(cniVersion, name string, section, ipRanges json.RawMessage) (*Config, error) {
	if isNull(section) {
		return nil, invalid("ipam", "", "missing")
	}
	ri := rawIPAM{DataDir: DefaultDataDir}
	if err := decode(section, &ri, "ipam."); err != nil {
		return nil, err
	}
	cfg := &Config{
		CNIVersion: cniVersion,
		Name:       name,
		Type:       ri.Type,
		DNS:        ri.DNS,
		ResolvConf: ri.ResolvConf,
		DataDir:    ri.DataDir,
	}
	if !filepath.IsAbs(cfg.DataDir) {
		return nil, invalid("ipam.dataDir", cfg.DataDir, "must be an absolute path")
	}
	var err error
	if cfg.Ranges, err = parseAllRanges(&ri, ipRanges); err != nil {
		return nil, err
	}
	if cfg.Addresses, err = parseAddresses(ri.Addresses); err != nil {
		return nil, err
	}
	if cfg.Routes, err = parseRoutes(ri.Routes); err != nil {
		return nil, err
	}
	if cfg.Store, err = parseStore(ri.Store); err != nil {
		return nil, err
	}
	return cfg, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// decode unmarshals, turning JSON errors into *Error: code 6 when the text does not
// parse, code 7 naming the field when a value has the wrong type.
func decode(raw []byte, v any, fieldPrefix string) error {
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	field := strings.TrimSuffix(fieldPrefix, ".")
	if field == "" {
		field = "config" // the whole document, e.g. a bare number
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			// The legacy single range's fields sit in an embedded struct, whose Go name
			// encoding/json puts in the path: the user wrote ipam.subnet.
			field = fieldPrefix + strings.TrimPrefix(te.Field, "rawRange.")
		}
		return invalid(field, "", "wrong type: JSON %s where %s is expected", te.Value, jsonKind(te.Type))
	}
	return &Error{Field: field, Reason: "not valid JSON: " + err.Error(), Code: codes.DecodingFailure}
}

// jsonKind names a Go type the way a JSON user knows it.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	default:
		return "number"
	}
}

// parseAllRanges returns the range sets: runtimeConfig.ipRanges if given, else the legacy
// single range followed by ipam.ranges; canonical and free of overlaps.
func parseAllRanges(ri *rawIPAM, ipRanges json.RawMessage) ([]RangeSet, error) {
	type source struct {
		field string
		sets  [][]rawRange
	}
	var sources []source
	if !isNull(ipRanges) {
		var sets [][]rawRange
		if err := decode(ipRanges, &sets, "runtimeConfig.ipRanges."); err != nil {
			return nil, err
		}
		sources = append(sources, source{"runtimeConfig.ipRanges", sets})
	} else {
		if ri.rawRange != (rawRange{}) {
			sources = append(sources, source{"ipam", [][]rawRange{{ri.rawRange}}})
		}
		sources = append(sources, source{"ipam.ranges", ri.Ranges})
	}
	var (
		out    []RangeSet
		fields []string // field path of each set, for overlap messages
	)
	for _, src := range sources {
		for i, set := range src.sets {
			field := fmt.Sprintf("%s[%d]", src.field, i)
			if src.field == "ipam" { // the legacy single range: ipam.subnet, ipam.gateway...
				field = "ipam"
			}
			rs, err := parseRangeSet(field, set, src.field == "ipam")
			if err != nil {
				return nil, err
			}
			out = append(out, rs)
			fields = append(fields, field)
		}
	}
	if later, earlier, ok := findOverlap(out); ok {
		r, o := out[later.set][later.idx], out[earlier.set][earlier.idx]
		if later.set == earlier.set {
			return nil, invalid(fmt.Sprintf("%s[%d]", fields[later.set], later.idx), "", "range %s overlaps range %s of %s[%d]", r.describe(), o.describe(), fields[later.set], earlier.idx)
		}
		return nil, invalid(fields[later.set], "", "range %s overlaps range %s of %s", r.describe(), o.describe(), fields[earlier.set])
	}
	return out, nil
}

// rangeRef locates a parsed range: its set and its index in the set.
type rangeRef struct{ set, idx int }

// findOverlap returns two overlapping ranges, the later one in config order first. It
// sorts the ranges by family and start, so that a range overlaps an earlier one exactly
// when it starts at or before the end of the range that reaches furthest so far: O(n log n)
// where comparing every pair made a config of many ranges take minutes.
func findOverlap(sets []RangeSet) (later, earlier rangeRef, ok bool) {
	var refs []rangeRef
	for i, set := range sets {
		for j := range set {
			refs = append(refs, rangeRef{i, j})
		}
	}
	at := func(r rangeRef) Range { return sets[r.set][r.idx] }
	slices.SortFunc(refs, func(a, b rangeRef) int {
		ra, rb := at(a), at(b)
		if c := cmp.Compare(ra.RangeStart.BitLen(), rb.RangeStart.BitLen()); c != 0 {
			return c
		}
		return ra.RangeStart.Compare(rb.RangeStart)
	})
	for k := 1; k < len(refs); k++ {
		// Without an overlap so far, refs[k-1] ends furthest among the ranges before it.
		if at(refs[k]).overlaps(at(refs[k-1])) {
			a, b := refs[k], refs[k-1]
			if a.set < b.set || a.set == b.set && a.idx < b.idx {
				a, b = b, a
			}
			return a, b, true
		}
	}
	return rangeRef{}, rangeRef{}, false
}

func parseRangeSet(field string, set []rawRange, legacy bool) (RangeSet, error) {
	if len(set) == 0 {
		return nil, invalid(field, "", "empty range set")
	}
	var rs RangeSet
	for j, raw := range set {
		f := fmt.Sprintf("%s[%d]", field, j)
		if legacy {
			f = field
		}
		r, err := parseRange(f, raw)
		if err != nil {
			return nil, err
		}
		if j > 0 && r.Subnet.Addr().BitLen() != rs[0].Subnet.Addr().BitLen() {
			return nil, invalid(f+".subnet", raw.Subnet, "mixes IPv4 and IPv6 in one range set (%s)", rs[0].Subnet)
		}
		rs = append(rs, r) // overlaps are found across all sets at once (findOverlap)
	}
	return rs, nil
}

// parseRange canonicalises one range with host-local's defaults.
func parseRange(field string, raw rawRange) (Range, error) {
	if raw.Subnet == "" {
		return Range{}, invalid(field+".subnet", "", "missing")
	}
	subnet, err := netip.ParsePrefix(raw.Subnet)
	if err != nil {
		return Range{}, invalid(field+".subnet", raw.Subnet, "not a CIDR subnet")
	}
	subnet = unmapPrefix(subnet)
	if subnet != subnet.Masked() {
		return Range{}, invalid(field+".subnet", raw.Subnet, "host bits set; the network address is %s", subnet.Masked())
	}
	bitLen := subnet.Addr().BitLen()
	if subnet.Bits() == 0 {
		return Range{}, invalid(field+".subnet", raw.Subnet, "is the whole address space: a network's subnet must be a part of it")
	}
	if subnet.Bits() > bitLen-minHostBits {
		return Range{}, invalid(field+".subnet", raw.Subnet, "too small to allocate from (at most /%d)", bitLen-minHostBits)
	}
	r := Range{Subnet: subnet, RangeStart: subnet.Addr().Next(), RangeEnd: store.LastAddr(subnet), Gateway: subnet.Addr().Next()}
	if subnet.Addr().Is4() {
		r.RangeEnd = r.RangeEnd.Prev() // the broadcast address
	}
	inSubnet := func(name, value string, dst *netip.Addr) error {
		if value == "" {
			return nil
		}
		a, err := parseAddr(value)
		if err != nil {
			return invalid(field+"."+name, value, "not an IP address")
		}
		if a.BitLen() != bitLen {
			return invalid(field+"."+name, value, "not of the family of subnet %s", subnet)
		}
		if !subnet.Contains(a) {
			return invalid(field+"."+name, value, "not in subnet %s", subnet)
		}
		*dst = a
		return nil
	}
	if err := inSubnet("rangeStart", raw.RangeStart, &r.RangeStart); err != nil {
		return Range{}, err
	}
	if err := inSubnet("rangeEnd", raw.RangeEnd, &r.RangeEnd); err != nil {
		return Range{}, err
	}
	// A gateway outside the subnet would make the host route to it through the bridge.
	if err := inSubnet("gateway", raw.Gateway, &r.Gateway); err != nil {
		return Range{}, err
	}
	if r.RangeEnd.Less(r.RangeStart) {
		return Range{}, invalid(field+".rangeEnd", r.RangeEnd.String(), "before rangeStart %s", r.RangeStart)
	}
	return r, nil
}

// minHostBits: a subnet needs at least 2 host bits (a /30 or /126) to hand out anything
// besides the network and broadcast addresses, as host-local requires.
const minHostBits = 2

func (r Range) overlaps(o Range) bool {
	return r.RangeStart.BitLen() == o.RangeStart.BitLen() &&
		!r.RangeEnd.Less(o.RangeStart) && !o.RangeEnd.Less(r.RangeStart)
}

func (r Range) describe() string {
	return fmt.Sprintf("%s (%s-%s)", r.Subnet, r.RangeStart, r.RangeEnd)
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, errors.New("zones are not allowed")
	}
	return a.Unmap(), nil
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96), as host-local
// canonicalises 4-in-6 addresses.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	const v4InV6Bits = 96
	if p.Addr().Is4In6() && p.Bits() >= v4InV6Bits {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-v4InV6Bits)
	}
	return p
}

func parseAddresses(raws []rawAddress) ([]Address, error) {
	var out []Address
	seen := map[netip.Addr]int{}
	for i, raw := range raws {
		f := fmt.Sprintf("ipam.addresses[%d]", i)
		p, err := netip.ParsePrefix(raw.Address)
		if err != nil {
			return nil, invalid(f+".address", raw.Address, "not an address in CIDR notation (e.g. 10.0.0.5/24)")
		}
		a := Address{Address: unmapPrefix(p)}
		if j, dup := seen[a.Address.Addr()]; dup {
			return nil, invalid(f+".address", raw.Address, "same address as ipam.addresses[%d]", j)
		}
		seen[a.Address.Addr()] = i
		if raw.Gateway != "" {
			if a.Gateway, err = parseAddr(raw.Gateway); err != nil {
				return nil, invalid(f+".gateway", raw.Gateway, "not an IP address")
			}
			if a.Gateway.BitLen() != a.Address.Addr().BitLen() {
				return nil, invalid(f+".gateway", raw.Gateway, "not of the family of %s", a.Address)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func parseRoutes(raws []rawRoute) ([]*types.Route, error) {
	var out []*types.Route
	for i, raw := range raws {
		f := fmt.Sprintf("ipam.routes[%d]", i)
		dst, err := netip.ParsePrefix(raw.Dst)
		if err != nil {
			return nil, invalid(f+".dst", raw.Dst, "not a CIDR destination")
		}
		dst = unmapPrefix(dst).Masked()
		r := &types.Route{Dst: IPNet(dst), MTU: raw.MTU, AdvMSS: raw.AdvMSS, Priority: raw.Priority, Table: raw.Table, Scope: raw.Scope}
		if raw.GW != "" {
			gw, err := parseAddr(raw.GW)
			if err != nil {
				return nil, invalid(f+".gw", raw.GW, "not an IP address")
			}
			if gw.BitLen() != dst.Addr().BitLen() {
				return nil, invalid(f+".gw", raw.GW, "not of the family of dst %s", dst)
			}
			r.GW = net.IP(gw.AsSlice())
		}
		out = append(out, r)
	}
	return out, nil
}

// IPNet converts a prefix to a net.IPNet (4-byte form for IPv4), as CNI results carry.
func IPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func parseStore(raw rawStore) (StoreConfig, error) {
	sc := StoreConfig{Type: raw.Type, Prefix: raw.Prefix, LockTimeout: DefaultLockTimeout}
	if sc.Type == "" {
		sc.Type = StoreLocal
	}
	fields := etcdconf.Fields{Endpoints: raw.Endpoints, TLS: raw.TLS, DialTimeout: raw.DialTimeout, RequestTimeout: raw.RequestTimeout}
	switch sc.Type {
	case StoreLocal:
		etcdOnly := fields.Set()
		if raw.Prefix != "" {
			etcdOnly = append(etcdOnly, "prefix")
		}
		if len(etcdOnly) > 0 {
			return sc, unsupported("ipam.store."+etcdOnly[0], "", "applies to store type %q only, not %q", StoreEtcd, StoreLocal)
		}
		if !isNull(raw.LockTimeout) {
			v, err := etcdconf.ParseDuration(raw.LockTimeout)
			if err != nil {
				return sc, invalid("ipam.store.lockTimeout", strings.Trim(string(raw.LockTimeout), `"`), "%v", err)
			}
			sc.LockTimeout = v
		}
	case StoreEtcd:
		if !isNull(raw.LockTimeout) {
			return sc, unsupported("ipam.store.lockTimeout", "", "applies to store type %q only, not %q", StoreLocal, StoreEtcd)
		}
		if sc.Prefix == "" {
			sc.Prefix = DefaultStorePrefix
		}
		etcd, err := fields.Config("ipam.store")
		var fe *etcdconf.FieldError
		if errors.As(err, &fe) {
			return sc, invalid(fe.Field, fe.Value, "%s", fe.Reason)
		}
		sc.Etcd = etcd
	default:
		return sc, invalid("ipam.store.type", sc.Type, "must be %q or %q", StoreLocal, StoreEtcd)
	}
	return sc, nil
}

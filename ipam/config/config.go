// Package config parses and canonicalises the ipam section of a moor-ipam config.
//
// It accepts every field of the reference host-local and static IPAM plugins with the
// same meaning, so that an existing conflist moves to moor by changing `type`:
//
//	"ipam": {
//	  "type": "moor-ipam",
//	  "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.99",
//	               "gateway": "10.0.0.1"}], [{"subnet": "fd00::/64"}]],
//	  "subnet": "...", "rangeStart": "...", "rangeEnd": "...", "gateway": "...",  (legacy single range)
//	  "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
//	  "resolvConf": "/etc/resolv.conf",
//	  "dataDir": "/var/lib/moor/ipam",
//	  "addresses": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],              (static)
//	  "dns": {"nameservers": [...], "domain": "...", "search": [...], "options": [...]},  (static)
//	  "store": {"type": "local"|"etcd", "endpoints": [...], "prefix": "/moor/ipam",
//	            "tls": {"certFile": "...", "keyFile": "...", "caFile": "..."},
//	            "dialTimeout": "2s", "requestTimeout": "5s", "lockTimeout": "10s"}
//	}
//
// plus the top-level `name`, `cniVersion` and the capability `runtimeConfig.ipRanges`.
//
// Where the reference plugins leave room, these are the choices:
//   - range defaults are host-local's: gateway network+1, rangeStart network+1, rangeEnd
//     the broadcast-1 (IPv4) or the last address (IPv6); a subnet with host bits set, or
//     smaller than /30 (/126), is refused, as host-local does;
//   - the legacy top-level subnet becomes the first range set, before `ranges`;
//   - `runtimeConfig.ipRanges` replaces the configured ranges (host-local prepends them):
//     a runtime that passes ranges means them to be the network's, and replacing avoids
//     overlap errors when a runtime passes the configured range again;
//   - overlapping ranges, within one range set or across sets, are refused (code 7);
//   - static `addresses` and ranges may be combined: the allocator reserves the static
//     addresses in the same store, so the dynamic side never hands them out;
//   - options of the other store type are refused with code 2 (unsupported field);
//   - durations are Go duration strings ("2s") or numbers of seconds, as in every moor
//     config (the etcd fields are plugins/etcdconf's, shared with moor-dns and moor-overlay);
//   - routes are returned as given: a route without gw gets none in the result, and the
//     interface plugin uses the gateway of the route's family, as the reference plugins do.
//
// Every error is a *Error (the etcd fields': etcdconf's code 7 error) naming the field
// path and value, e.g.
// `ipam.ranges[0][1].subnet "10.0.0.0/33": not a CIDR subnet`, with CNI code 7 (6 for
// JSON that does not parse, 2 for a field of the other store type).
//
// What it does not do: read files (resolvConf is read by the allocator, TLS files by the
// etcd store), or resolve requested addresses (runtimeConfig.ips, args.cni.ips,
// CNI_ARGS IP=): the plugin framework merges those and the caller passes them to the
// allocator.
package config

import (
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/plugins/etcdconf"
)

// Defaults.
const (
	DefaultDataDir     = "/var/lib/moor/ipam"
	DefaultStorePrefix = "/moor/ipam"
	DefaultLockTimeout = 10 * time.Second
)

// Store types.
const (
	StoreLocal = "local"
	StoreEtcd  = "etcd"
)

// Config is a parsed, canonical ipam config.
type Config struct {
	CNIVersion string
	// Name is the network name (top-level `name`); it names the store file or prefix.
	Name string
	// Type is ipam.type.
	Type string
	// Ranges are the range sets, canonical: each range has its subnet masked and start,
	// end and gateway filled. From runtimeConfig.ipRanges when given, else the legacy
	// subnet followed by ipam.ranges.
	Ranges []RangeSet
	// Addresses are the static addresses (ipam.addresses), host bits kept.
	Addresses  []Address
	Routes     []*types.Route
	DNS        types.DNS
	ResolvConf string
	DataDir    string
	Store      StoreConfig
}

// RangeSet is a pool: one address is allocated from it per attachment.
type RangeSet []Range

// Range is one host-local range, canonical.
type Range struct {
	Subnet     netip.Prefix
	RangeStart netip.Addr
	RangeEnd   netip.Addr
	Gateway    netip.Addr
}

// Contains reports whether a lies in [RangeStart, RangeEnd].
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.RangeStart.BitLen() && r.RangeStart.Compare(a) <= 0 && a.Compare(r.RangeEnd) <= 0
}

// Contains reports whether a lies in one of the set's ranges.
func (s RangeSet) Contains(a netip.Addr) bool {
	for _, r := range s {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Address is a static address.
type Address struct {
	Address netip.Prefix
	Gateway netip.Addr // zero when none
}

// StoreConfig is ipam.store.
type StoreConfig struct {
	Type        string // StoreLocal or StoreEtcd
	Prefix      string
	LockTimeout time.Duration // local store
	// Etcd is how to reach etcd (store type etcd): endpoints, TLS, timeouts, parsed by
	// plugins/etcdconf as every moor etcd config is.
	Etcd etcdconf.Config
}

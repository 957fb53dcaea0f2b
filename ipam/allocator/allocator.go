// Package allocator is moor-ipam's logic, for the moor-ipam binary and for the
// interface plugins (bridge, macvlan, overlay) that call IPAM in process: it turns a
// parsed config (package config) and a request into a store allocation (package store)
// and a CNI result.
//
// One Allocate reserves, in one store transaction, one address from each range set
// (the requested one if a requested address falls in that set, else the next free one,
// round-robin) plus every static address, and returns them with their gateways, the
// configured routes and the DNS settings (resolvConf parsed, then the static `dns`
// fields on top). An ADD for a key that already holds addresses returns those addresses.
// Gateway, network and broadcast (IPv4) addresses are never handed out.
//
// Requested addresses (capability ips, args.cni.ips, CNI_ARGS IP=, merged by the
// caller into Request.RequestedIPs) follow host-local when the config has ranges: each
// must lie in a range set (else code 102, nothing reserved), at most one per set; and
// follow static when it has none: they replace the configured addresses, keeping their
// prefix length (a bare address takes the length of a configured address whose subnet
// contains it, else /32 or /128). CNI_ARGS GATEWAY= (Request.Gateways) sets the gateway
// of each static address whose subnet contains it, as static does.
//
// Fault point for crash tests: MOOR_TEST_FAULT=ipam/after-reserve:kill makes the process
// SIGKILL itself inside the allocation transaction, after the addresses are reserved and
// before the attachment is recorded (":error" fails the transaction there instead); see
// package kv.
//
// What it does not do: exec anything, touch network interfaces, or map errors to CNI
// error objects (errors carry CNICode methods; the framework maps them).
package allocator

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins/codes"
)

// Allocator allocates the addresses of one network config from a store.
type Allocator struct {
	cfg *config.Config
	st  store.Store
}

// New returns an allocator for cfg over st. The caller keeps ownership of st (and
// closes it).
func New(cfg *config.Config, st store.Store) *Allocator { return &Allocator{cfg: cfg, st: st} }

// Request is one ADD.
type Request struct {
	Key           store.Key
	Netns         string
	ContainerName string
	PodNamespace  string
	MAC           string
	// RequestedIPs are the addresses asked for. Only the address counts when the config
	// has ranges; a config without ranges uses the prefix length too (pass a bare
	// address as a full-length prefix: netip.PrefixFrom(a, a.BitLen())).
	RequestedIPs []netip.Prefix
	// Gateways (CNI_ARGS GATEWAY=) apply to static addresses whose subnet contains them.
	Gateways []netip.Addr
}

// Allocate reserves the addresses of req and returns the IPAM result (ips, routes,
// dns; no interfaces). On error nothing is reserved.
func (a *Allocator) Allocate(ctx context.Context, req Request) (*types100.Result, error) {
	res, _, commit, err := a.AllocateDeferred(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := commit(); err != nil {
		return nil, err
	}
	return res, nil
}

// AllocateDeferred is Allocate whose result is durable only once commit returned nil
// (see store.DeferredAllocator; on a store without deferred commits, commit does
// nothing). held reports that req's key already held the addresses (a duplicate ADD or
// a retry): a rollback of this call must not release them.
func (a *Allocator) AllocateDeferred(ctx context.Context, req Request) (res *types100.Result, held bool, commit func() error, err error) {
	areq, gateways, err := a.plan(req)
	if err != nil {
		return nil, false, nil, err
	}
	dns, err := a.dns() // before reserving: a bad resolvConf must not leak addresses
	if err != nil {
		return nil, false, nil, err
	}
	var att store.Attachment
	if d, ok := a.st.(store.DeferredAllocator); ok {
		att, held, commit, err = d.AllocateDeferred(ctx, areq)
	} else {
		_, gerr := a.st.Get(ctx, req.Key)
		held = gerr == nil
		att, err = a.st.Allocate(ctx, areq)
		commit = func() error { return nil }
	}
	if err != nil {
		return nil, false, nil, err
	}
	res = &types100.Result{CNIVersion: types100.ImplementedSpecVersion, DNS: dns}
	for _, p := range att.IPs {
		ipc := &types100.IPConfig{Address: config.IPNet(p)}
		if gw := a.gatewayOf(p.Addr(), gateways); gw.IsValid() {
			ipc.Gateway = net.IP(gw.AsSlice())
		}
		res.IPs = append(res.IPs, ipc)
	}
	for _, r := range a.cfg.Routes {
		res.Routes = append(res.Routes, r.Copy())
	}
	return res, held, commit, nil
}

// Release frees the addresses of key and returns them. Releasing twice, or a key that
// holds nothing, is not an error.
func (a *Allocator) Release(ctx context.Context, key store.Key) ([]netip.Prefix, error) {
	return a.st.Release(ctx, key)
}

// Check verifies that key still holds addresses and, when prev is given, that every
// address of prev is reserved for key. A mismatch is a *CheckError (code 110).
func (a *Allocator) Check(ctx context.Context, key store.Key, prev *types100.Result) error {
	att, err := a.st.Get(ctx, key)
	if err != nil {
		if isNotFound(err) {
			return &CheckError{Key: key, Reason: "no addresses are reserved for it"}
		}
		return err
	}
	held := map[netip.Addr]bool{}
	for _, p := range att.IPs {
		held[p.Addr()] = true
	}
	if prev == nil {
		return nil
	}
	for _, ipc := range prev.IPs {
		addr, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok || !held[addr.Unmap()] {
			return &CheckError{Key: key, Reason: fmt.Sprintf("address %s of the result is not reserved for it (it holds %s)", ipc.Address.String(), prefixList(att.IPs))}
		}
	}
	return nil
}

// ValidKeys converts the GC verb's cni.dev/valid-attachments to store keys.
func ValidKeys(atts []types.GCAttachment) []store.Key {
	keys := make([]store.Key, len(atts))
	for i, att := range atts {
		keys[i] = store.Key{ContainerID: att.ContainerID, IfName: att.IfName}
	}
	return keys
}

// GC releases every attachment whose key is not in valid and returns them.
func (a *Allocator) GC(ctx context.Context, valid []store.Key) ([]store.Attachment, error) {
	return a.st.GC(ctx, valid)
}

// Status returns nil when the store can be used now (the plugin reports an error as
// code 50).
func (a *Allocator) Status(ctx context.Context) error { return a.st.Status(ctx) }

// plan builds the store request and the gateway of each static address.
func (a *Allocator) plan(req Request) (store.AllocRequest, map[netip.Addr]netip.Addr, error) {
	areq := store.AllocRequest{Attachment: store.Attachment{
		Key: req.Key, Netns: req.Netns, ContainerName: req.ContainerName, PodNamespace: req.PodNamespace,
		MAC: req.MAC, Created: time.Now().UTC(),
	}}
	static := a.cfg.Addresses
	if len(a.cfg.Ranges) > 0 {
		pools, err := a.pools(req.RequestedIPs)
		if err != nil {
			return areq, nil, err
		}
		areq.Pools = pools
	} else if len(req.RequestedIPs) > 0 {
		static = requestedStatic(req.RequestedIPs, a.cfg.Addresses)
	}
	gateways := map[netip.Addr]netip.Addr{}
	for _, s := range static {
		gw := s.Gateway
		for _, g := range req.Gateways {
			if s.Address.Masked().Contains(g.Unmap()) {
				gw = g.Unmap()
			}
		}
		areq.Static = append(areq.Static, s.Address)
		gateways[s.Address.Addr()] = gw
	}
	if len(areq.Pools) == 0 && len(areq.Static) == 0 {
		return areq, nil, &config.Error{Field: "ipam", Reason: "nothing to allocate: no ranges, no addresses and no requested addresses", Code: codes.InvalidNetworkConfig}
	}
	return areq, gateways, nil
}

// pools builds one store pool per range set, with the requested address that falls in it.
func (a *Allocator) pools(requested []netip.Prefix) ([]store.Pool, error) {
	pools := make([]store.Pool, len(a.cfg.Ranges))
	for i, set := range a.cfg.Ranges {
		pools[i] = toPool(set)
	}
	for _, p := range requested {
		addr := p.Addr().Unmap()
		idx := -1
		for i, set := range a.cfg.Ranges {
			if set.Contains(addr) {
				idx = i
				break
			}
		}
		if idx < 0 {
			names := make([]string, len(pools))
			for i, pool := range pools {
				names[i] = pool.String()
			}
			return nil, &store.OutOfRangeError{Addr: addr, Pool: strings.Join(names, "; ")}
		}
		if prev := pools[idx].Requested; prev.IsValid() && prev != addr {
			return nil, &config.Error{Field: "requested address", Value: addr.String(), Code: codes.InvalidNetworkConfig,
				Reason: fmt.Sprintf("falls in the same range set as %s (ipam.ranges[%d]); one address per range set", prev, idx)}
		}
		pools[idx].Requested = addr
	}
	return pools, nil
}

// toPool converts a range set; the gateway, and for IPv4 the network and broadcast
// addresses, are never handed out.
func toPool(set config.RangeSet) store.Pool {
	var p store.Pool
	for _, r := range set {
		skip := []netip.Addr{r.Gateway}
		if r.Subnet.Addr().Is4() {
			skip = append(skip, r.Subnet.Addr(), store.LastAddr(r.Subnet))
		}
		p.Ranges = append(p.Ranges, store.Range{Subnet: r.Subnet, First: r.RangeStart, Last: r.RangeEnd, Skip: skip})
	}
	return p
}

// requestedStatic turns requested addresses into static ones (config without ranges):
// they replace the configured addresses, as static's runtime inputs do.
func requestedStatic(requested []netip.Prefix, configured []config.Address) []config.Address {
	var out []config.Address
	seen := map[netip.Addr]bool{}
	for _, p := range requested {
		addr := p.Addr().Unmap()
		if seen[addr] {
			continue
		}
		seen[addr] = true
		bits := p.Bits()
		if p.Addr().Is4In6() {
			if bits -= (net.IPv6len - net.IPv4len) * 8; bits < 0 {
				bits = addr.BitLen()
			}
		}
		s := config.Address{Address: netip.PrefixFrom(addr, bits)}
		if bits == addr.BitLen() {
			for _, c := range configured {
				if c.Address.Masked().Contains(addr) {
					s = config.Address{Address: netip.PrefixFrom(addr, c.Address.Bits()), Gateway: c.Gateway}
					break
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// gatewayOf returns the gateway for an allocated address: its range's, or its static
// address's.
func (a *Allocator) gatewayOf(addr netip.Addr, static map[netip.Addr]netip.Addr) netip.Addr {
	if gw, ok := static[addr]; ok {
		return gw
	}
	for _, set := range a.cfg.Ranges {
		for _, r := range set {
			if r.Contains(addr) {
				return r.Gateway
			}
		}
	}
	return netip.Addr{}
}

// dns returns resolvConf's settings with the static dns fields on top.
func (a *Allocator) dns() (types.DNS, error) {
	var dns types.DNS
	if a.cfg.ResolvConf != "" {
		var err error
		if dns, err = parseResolvConf(a.cfg.ResolvConf); err != nil {
			return dns, &config.Error{Field: "ipam.resolvConf", Value: a.cfg.ResolvConf, Reason: err.Error(), Code: codes.InvalidNetworkConfig}
		}
	}
	d := a.cfg.DNS
	if len(d.Nameservers) > 0 {
		dns.Nameservers = d.Nameservers
	}
	if d.Domain != "" {
		dns.Domain = d.Domain
	}
	if len(d.Search) > 0 {
		dns.Search = d.Search
	}
	if len(d.Options) > 0 {
		dns.Options = d.Options
	}
	return dns, nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

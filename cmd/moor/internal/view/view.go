// Package view builds what `moor network ls` and `moor network inspect` print: Docker's
// view of moor networks (rows and inspect documents) from their configs, their stores and
// the kernel.
//
// Decisions, and why:
//   - a network's containers are its IPAM store's attachments (moor-ipam); for a network
//     without a moor-ipam store (host, none, another IPAM) they are the attachments in the
//     runtime's result cache, which the CLI can see only for its own cache directory;
//   - inspect's Containers map is keyed by container ID, or "<container ID>/<ifname>" for
//     a container attached more than once; EndpointID is the full attachment hash (its
//     first 32 digits are the host veth's altname); MacAddress comes from the IPAM store,
//     else from the runtime's cached result (moor-bridge learns the MAC after IPAM ran);
//   - Status.IPAM.Subnets has Docker's shape: per subnet, IPsInUse counts the addresses of
//     attachments plus the ones never handed out (gateway, IPv4 network and broadcast),
//     DynamicIPsAvailable the free addresses of the subnet's dynamic ranges (saturating at
//     2^64-1 for large IPv6 ranges);
//   - Live is moor's own section: the bridge (or macvlan parent) present and up, the
//     network's firewall rules (CheckNetwork), and the DNS sidecar (answering on its
//     control socket, records of the network). A value that cannot be read is left out and
//     the reason listed in Live.Errors.
//
// What it does not do: format output (package cli does) or change anything.
package view

import (
	"context"
	"errors"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/cmd/moor/internal/hostns"
	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/store"
)

// Scopes, named as Docker names them: a network of one host is "local"; an overlay network
// spans every host that shares its etcd store, which Docker calls "global".
const (
	ScopeLocal  = "local"
	ScopeGlobal = "global"
)

// scopeOf is the scope of a network of the driver.
func scopeOf(driver string) string {
	if driver == conflist.DriverOverlay {
		return ScopeGlobal
	}
	return ScopeLocal
}

// Source is where the view reads from.
type Source struct {
	Host *hostns.Host
	DNS  state.DNS
	// Cached lists a network's attachments in the runtime's result cache; nil: none.
	Cached func(network string) ([]*libcni.NetworkAttachment, error)
	// CachedResult returns an attachment's cached ADD result (nil: none); nil: no cache.
	CachedResult func(list *libcni.NetworkConfigList, containerID, ifName string) (*current.Result, error)
}

// Attachments returns the network's attachments: from its moor-ipam store, else from
// the result cache (without addresses).
func (s Source) Attachments(ctx context.Context, n *conflist.Network) ([]store.Attachment, error) {
	atts, err := state.Attachments(ctx, n)
	if !errors.Is(err, state.ErrNoStore) {
		return atts, err
	}
	if s.Cached == nil {
		return nil, nil
	}
	cached, err := s.Cached(n.Name)
	if err != nil {
		return nil, err
	}
	out := make([]store.Attachment, 0, len(cached))
	for _, c := range cached {
		a := store.Attachment{Key: store.Key{ContainerID: c.ContainerID, IfName: c.IfName}, Netns: c.NetNS}
		for _, kv := range c.CniArgs {
			if kv[0] == "K8S_POD_NAME" {
				a.ContainerName = kv[1]
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// Row is one line of `moor network ls`; its fields are the --format placeholders.
type Row struct {
	ID         string            `json:"ID"`
	Name       string            `json:"Name"`
	Driver     string            `json:"Driver"`
	Scope      string            `json:"Scope"`
	Subnet     string            `json:"Subnet"`
	Gateway    string            `json:"Gateway"`
	Containers int               `json:"Containers"`
	Internal   bool              `json:"Internal"`
	IPv6       bool              `json:"IPv6"`
	DNS        bool              `json:"DNS"`
	Labels     map[string]string `json:"Labels"`
	CreatedAt  string            `json:"CreatedAt"`
	File       string            `json:"File"`
}

// Rows builds the rows of the networks, with full IDs. Networks whose attachments cannot
// be read still get a row (Containers 0); the errors are returned beside.
func (s Source) Rows(ctx context.Context, nets []*conflist.Network) ([]Row, []error) {
	var rows []Row
	var errs []error
	for _, n := range nets {
		atts, err := s.Attachments(ctx, n)
		if err != nil {
			errs = append(errs, err)
		}
		subnets, gateways := SubnetsAndGateways(n)
		labels := n.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		rows = append(rows, Row{
			ID: n.ID, Name: n.Name, Driver: n.Driver, Scope: scopeOf(n.Driver),
			Subnet: joinPrefixes(subnets), Gateway: joinAddrs(gateways),
			Containers: len(atts), Internal: n.Conf.Internal, IPv6: hasIPv6(subnets),
			DNS: n.DNS != nil, Labels: labels, CreatedAt: created(n), File: n.File,
		})
	}
	return rows, errs
}

// SubnetsAndGateways lists the network's subnets (one per range, then static addresses)
// and their gateways, without repeats.
func SubnetsAndGateways(n *conflist.Network) ([]netip.Prefix, []netip.Addr) {
	if n.IPAM == nil {
		return nil, nil
	}
	var subnets []netip.Prefix
	var gateways []netip.Addr
	seenS := map[netip.Prefix]bool{}
	seenG := map[netip.Addr]bool{}
	add := func(p netip.Prefix, gw netip.Addr) {
		if !seenS[p] {
			seenS[p] = true
			subnets = append(subnets, p)
		}
		if gw.IsValid() && !seenG[gw] {
			seenG[gw] = true
			gateways = append(gateways, gw)
		}
	}
	for _, set := range n.IPAM.Ranges {
		for _, r := range set {
			add(r.Subnet, r.Gateway)
		}
	}
	for _, a := range n.IPAM.Addresses {
		add(a.Address.Masked(), a.Gateway)
	}
	return subnets, gateways
}

func hasIPv6(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// timeFormat is how times are printed: RFC 3339 with nanoseconds, as Docker does.
const timeFormat = "2006-01-02T15:04:05.999999999Z07:00"

func created(n *conflist.Network) string {
	if n.Created.IsZero() {
		return ""
	}
	return n.Created.Format(timeFormat)
}

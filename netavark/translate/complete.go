package translate

import (
	"maps"
	"net/netip"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/moornet/moor/netavark/api"
)

// Complete is the create command: it checks a new network and fills what podman left
// open, so that every later setup builds the same config list from it:
//   - subnets: without any, the first free /24 of 10.89.0.0/16 .. 10.255.255.0/24 (and,
//     with ipv6_enabled, a unique local /64), free meaning not overlapping opts.Networks
//     and, for bridge networks, opts.Routes;
//   - each subnet's gateway (the first address unless given);
//   - network_interface: the bridge ("moor-" and 10 hex digits of the name's hash unless
//     given) or the macvlan master as given;
//   - ipv6_enabled from the subnets; ipam_options.driver "host-local" unless "moor-ipam".
//
// Name, ID and driver are never changed (podman refuses a plugin that changes them);
// fields moor does not know are kept.
func Complete(n api.Network, opts Options) (api.Network, error) {
	if err := utils.ValidateNetworkName(n.Name); err != nil {
		return n, invalid("name", n.Name, err.Details)
	}
	if n.ID == "" {
		return n, invalid("id", n.ID, "missing: podman fills in the network ID before create")
	}
	opts.PickIPv6 = n.IPv6Enabled
	opts.MoorAllocates = true // validate the lease ranges too
	conf, err := Build(n, opts)
	if err != nil {
		return n, err
	}
	out := n
	out.NetworkInterface = conf.Interface
	out.Subnets = nil
	out.IPv6Enabled = false
	for _, set := range conf.IPAM.Ranges {
		r := set[0]
		s := api.Subnet{Subnet: r.Subnet.String(), Gateway: r.Gateway.String(), LeaseRange: leaseRangeOf(n.Subnets, r.Subnet.String())}
		out.Subnets = append(out.Subnets, s)
		if r.Subnet.Addr().Is6() {
			out.IPv6Enabled = true
		}
	}
	out.IPAMOptions = maps.Clone(n.IPAMOptions)
	if out.IPAMOptions == nil {
		out.IPAMOptions = map[string]string{}
	}
	if out.IPAMOptions[ipamDriverKey] != IPAMMoor {
		out.IPAMOptions[ipamDriverKey] = IPAMHostLocal
	}
	return out, nil
}

// leaseRangeOf returns the lease range given for subnet (canonical form), nil when none.
func leaseRangeOf(subnets []api.Subnet, subnet string) *api.LeaseRange {
	for _, s := range subnets {
		if s.LeaseRange != nil && canonical(s.Subnet) == subnet {
			lr := *s.LeaseRange
			return &lr
		}
	}
	return nil
}

// canonical returns a subnet as netip prints it, or s itself when it does not parse.
func canonical(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return s
	}
	return p.Masked().String()
}

package main

import (
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/fineopts"
	"github.com/moornet/moor/plugins/firewall"
)

// Docker's finer bridge options (see conf): inter-container communication, gateway modes
// per family, the default host address of published ports and the masquerade source.
//
// icc false is enforced by the firewall package, never by a silent reliance on
// br_netfilter's host-wide sysctls: a rule drops what passes the IP forward hook from the
// bridge back into it unless DNATed (a published port), and firewall.NoICCBridge makes
// the frames the bridge switches between ports pass that hook (br_netfilter turned on
// for this bridge alone) or, on a kernel without br_netfilter, tells setPortFlags to
// isolate the ports. Port isolation is not used where br_netfilter exists: there a
// container's connection to a neighbour's published port is switched between the two
// ports after its DNAT, and isolation would drop it (plugins/firewall/noicc.go). Both
// hold on both firewall backends and cost nothing to networks that keep icc.

// fineOptions is the part of conf these options add.
type fineOptions struct {
	// With HostBindingIPv4/IPv6 set, a mapping without hostIP is published on the
	// configured addresses only (a family without one gets none).
	fineopts.Fields

	hostBinding map[bool]net.IP // by "is IPv4"
	snat, snat6 net.IP          // snatAddress (either family), snatAddressIPv6
}

// icc reports whether containers of the network may reach each other.
func (o *fineOptions) icc() bool { return !o.NoICC() }

// gatewayMode returns the mode of a family, "nat" when unset.
func (o *fineOptions) gatewayMode(v4 bool) string {
	m := o.GatewayModeIPv6
	if v4 {
		m = o.GatewayModeIPv4
	}
	if m == "" {
		return firewall.GatewayNAT
	}
	return m
}

// validateFine checks the finer options and their combinations with the rest of c.
func (c *conf) validateFine() error {
	o := &c.fineOptions
	for _, m := range []struct {
		field, value string
	}{{"gatewayModeIPv4", o.GatewayModeIPv4}, {"gatewayModeIPv6", o.GatewayModeIPv6}} {
		switch m.value {
		case "", firewall.GatewayNAT, firewall.GatewayRouted:
			if m.value == firewall.GatewayRouted && c.Internal {
				return plugins.InvalidField(m.field, m.value, "an internal network has no route in or out; drop one of internal and "+m.field)
			}
		case firewall.GatewayIsolated:
			if c.IPMasq {
				return plugins.InvalidField(m.field, m.value, "an isolated family has nothing to masquerade; drop ipMasq")
			}
			if c.IsDefaultGW {
				return plugins.InvalidField(m.field, m.value, "an isolated family has no gateway; drop isDefaultGateway")
			}
		default:
			return plugins.InvalidField(m.field, m.value, `must be "nat", "routed" or "isolated"`)
		}
	}
	o.hostBinding = map[bool]net.IP{}
	for _, b := range []struct {
		field, value string
		v4           bool
	}{{"hostBindingIPv4", o.HostBindingIPv4, true}, {"hostBindingIPv6", o.HostBindingIPv6, false}} {
		if b.value == "" {
			continue
		}
		ip := net.ParseIP(b.value)
		if ip == nil || (ip.To4() != nil) != b.v4 {
			return plugins.InvalidField(b.field, b.value, fmt.Sprintf("must be an IPv%s address", map[bool]string{true: "4", false: "6"}[b.v4]))
		}
		if ip.IsMulticast() {
			return plugins.InvalidField(b.field, b.value, "must be a unicast or unspecified address")
		}
		if !b.v4 && ip.IsLoopback() {
			return plugins.InvalidField(b.field, b.value, "IPv6 loopback cannot be published (the kernel has no route_localnet for IPv6)")
		}
		o.hostBinding[b.v4] = ip
	}
	// snatAddress takes either family (IPv4 for Docker's host_ipv4); snatAddressIPv6 adds
	// IPv6's beside an IPv4 snatAddress (Docker's host_ipv6).
	for _, s := range []struct {
		field, value string
		dst          *net.IP
	}{{"snatAddress", o.SNATAddress, &o.snat}, {"snatAddressIPv6", o.SNATAddressIPv6, &o.snat6}} {
		if s.value == "" {
			continue
		}
		ip := net.ParseIP(s.value)
		switch {
		case ip == nil:
			return plugins.InvalidField(s.field, s.value, "not an IP address")
		case s.dst == &o.snat6 && ip.To4() != nil:
			return plugins.InvalidField(s.field, s.value, "must be an IPv6 address (IPv4's goes in snatAddress)")
		case s.dst == &o.snat6 && o.snat != nil && o.snat.To4() == nil:
			return plugins.InvalidField(s.field, s.value, "snatAddress "+o.SNATAddress+" is IPv6 already; give IPv4's in snatAddress")
		case ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast():
			return plugins.InvalidField(s.field, s.value, "must be a unicast address")
		case !c.IPMasq || c.Internal:
			return plugins.InvalidField(s.field, s.value, "needs ipMasq on a network that is not internal")
		case o.gatewayMode(ip.To4() != nil) != firewall.GatewayNAT:
			return plugins.InvalidField(s.field, s.value, "its family's gateway mode is not nat: nothing is masqueraded")
		}
		*s.dst = ip
	}
	return nil
}

// gatewayOnBridge tells whether the gateway of an address goes on the bridge (not in an
// isolated family).
func (c *conf) gatewayOnBridge(ipc *current.IPConfig) bool {
	return c.IsGW && ipc.Gateway != nil && c.gatewayMode(ipc.Address.IP.To4() != nil) != firewall.GatewayIsolated
}

// fineNetwork sets the firewall fields of the finer options.
func (c *conf) fineNetwork(n *firewall.Network) {
	n.NoICC = !c.icc()
	n.GatewayMode4, n.GatewayMode6 = c.GatewayModeIPv4, c.GatewayModeIPv6
	n.SNATAddress, n.SNATAddressIPv6 = c.snat, c.snat6
}

// portMappings returns the runtime's port mappings, a mapping without hostIP published
// on the configured host bindings of the families the attachment has addresses in.
func (c *conf) portMappings(res *current.Result) ([]firewall.PortMapping, error) {
	has := map[bool]bool{}
	for _, ipc := range res.IPs {
		has[ipc.Address.IP.To4() != nil] = true
	}
	var out []firewall.PortMapping
	for i, pm := range c.RuntimeConfig.PortMappings {
		m := firewall.PortMapping{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: pm.Protocol, HostIP: pm.HostIP}
		if pm.HostIP != "" || len(c.hostBinding) == 0 {
			out = append(out, m)
			continue
		}
		n := len(out)
		for _, v4 := range []bool{true, false} {
			if ip := c.hostBinding[v4]; ip != nil && has[v4] {
				m.HostIP = ip.String()
				out = append(out, m)
			}
		}
		if len(out) == n {
			field, value := "hostBindingIPv4", c.HostBindingIPv4
			if value == "" {
				field, value = "hostBindingIPv6", c.HostBindingIPv6
			}
			return nil, plugins.InvalidField(field, value, fmt.Sprintf("portMappings[%d] has no hostIP and the attachment has no address of the family it binds", i))
		}
	}
	return out, nil
}

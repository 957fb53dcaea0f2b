package firewall

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Gateway modes of one address family (Network.GatewayMode4 and GatewayMode6), as
// Docker 28 has them.
const (
	// GatewayNAT (the default, also ""): masquerade when IPMasq; new connections from
	// outside reach containers only through published ports.
	GatewayNAT = "nat"
	// GatewayRouted: no masquerade; containers are reachable on their own addresses from
	// any host that routes the subnet via this one (isolation between networks stays).
	GatewayRouted = "routed"
	// GatewayIsolated: nothing is forwarded into or out of the bridge in this family (as
	// Internal, per family). The caller puts no gateway address on the bridge.
	GatewayIsolated = "isolated"
)

// Rule names of the finer options.
const (
	ruleNoICC = "no-icc" // network: drop traffic routed between two containers of the network
	ruleSNAT  = "snat"   // network: + ":" + subnet, SNAT to Network.SNATAddress
)

// mode returns the gateway mode of family f ("" is GatewayNAT; Routed makes the
// families that do not name a mode routed).
func (p netPlan) mode(f family) string {
	m := p.GatewayMode4
	if f == fam6 {
		m = p.GatewayMode6
	}
	if m == "" && p.Routed {
		return GatewayRouted
	}
	if m == "" {
		return GatewayNAT
	}
	return m
}

// internalIn tells whether nothing may be forwarded in or out of the bridge in family f.
func (p netPlan) internalIn(f family) bool { return p.Internal || p.mode(f) == GatewayIsolated }

// masqFamily tells whether traffic of family f leaving the bridge is masqueraded.
func (p netPlan) masqFamily(f family) bool {
	return p.IPMasq && !p.internalIn(f) && p.mode(f) == GatewayNAT
}

// natFamilies are the network's families in GatewayNAT mode (routed-in drop applies) and
// whether that is all of them.
func (p netPlan) natFamilies() (fams []family, all bool) {
	if len(p.families()) == 0 {
		return nil, !p.Routed && !p.Internal
	}
	for _, f := range p.families() {
		if !p.internalIn(f) && p.mode(f) == GatewayNAT {
			fams = append(fams, f)
		}
	}
	return fams, len(fams) == len(p.families())
}

// snatFor returns the source address for masqueraded traffic of family f, nil for the
// outgoing interface's address.
func (p netPlan) snatFor(f family) net.IP {
	if f == fam6 && p.SNATAddressIPv6 != nil {
		return p.SNATAddressIPv6.To16()
	}
	if p.SNATAddress == nil || familyOf(p.SNATAddress) != f {
		return nil
	}
	if f == fam4 {
		return p.SNATAddress.To4()
	}
	return p.SNATAddress.To16()
}

// checkModes validates the gateway modes and the SNAT address.
func (p netPlan) checkModes() error {
	for _, m := range []struct{ field, value string }{{"gatewayModeIPv4", p.GatewayMode4}, {"gatewayModeIPv6", p.GatewayMode6}} {
		switch m.value {
		case "", GatewayNAT, GatewayRouted, GatewayIsolated:
		default:
			return invalid(m.field, m.value, `must be "nat", "routed" or "isolated"`)
		}
	}
	if ip := p.SNATAddressIPv6; ip != nil {
		switch {
		case familyOf(ip) != fam6:
			return invalid("snatAddressIPv6", ip.String(), "must be an IPv6 address")
		case p.SNATAddress != nil && familyOf(p.SNATAddress) == fam6:
			return invalid("snatAddressIPv6", ip.String(), "snatAddress "+p.SNATAddress.String()+" is IPv6 already; give IPv4's in snatAddress")
		}
	}
	for _, s := range []struct {
		field string
		ip    net.IP
	}{{"snatAddress", p.SNATAddress}, {"snatAddressIPv6", p.SNATAddressIPv6}} {
		ip := s.ip
		if ip == nil {
			continue
		}
		f := familyOf(ip)
		switch {
		case ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast():
			return invalid(s.field, ip.String(), "must be a unicast address")
		case !p.IPMasq || p.Internal:
			return invalid(s.field, ip.String(), "needs ipMasq (and a network that is not internal)")
		case p.mode(f) != GatewayNAT:
			return invalid(s.field, ip.String(), fmt.Sprintf("the IPv%d gateway mode is %q: nothing is masqueraded", f, p.mode(f)))
		}
	}
	return nil
}

// snatTo is the nftables SNAT to one address of family f.
func snatTo(f family, ip net.IP) []expr.Any {
	natFam := uint32(unix.NFPROTO_IPV4)
	if f == fam6 {
		natFam = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: []byte(ip)},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: natFam, RegAddrMin: reg1},
	}
}

// The operator's own place, which moor creates when missing and never rewrites, flushes
// or deletes (Docker's DOCKER-USER).
const (
	// UserTable is an nftables table (family inet) whose base chain UserChain hooks
	// forward at UserChainPriority, before moor's forward chain (priority filter, 0).
	UserTable = "moor-user"
	UserChain = "forward"
	// UserChainPriority: filter - 10.
	UserChainPriority = -10
	// IPTUserChain is the iptables/ip6tables chain (table filter) that the first rule of
	// MOOR-FORWARD jumps to, before moor's ACCEPT rules.
	IPTUserChain = "MOOR-USER"
)

// queueUserChain queues the operator's table and chain when the state read says they
// are missing; nothing otherwise (no cost on an ADD once they exist).
func queueUserChain(c *nftables.Conn, st nftState) {
	if st.userChain {
		return
	}
	t := &nftables.Table{Name: UserTable, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	prio := nftables.ChainPriority(UserChainPriority)
	policy := nftables.ChainPolicyAccept
	c.AddChain(&nftables.Chain{Name: UserChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: &prio, Policy: &policy})
}

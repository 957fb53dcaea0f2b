package firewall

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Names inside the nftables table (see the package doc for the layout).
const (
	nftTableName     = "moor"
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPostrouting = "postrouting"
	chainForward     = "forward"
	chainInput       = "input"
	chainHostports   = "hostports"
	setFwd           = "fwdmap"
	setNat           = "natmap"
	setBridges       = "bridges"
	setDNSGW4        = "dnsgw4" // gateway addresses whose port 53 is never translated
	setDNSGW6        = "dnsgw6"
	// iptMarkerTable is an empty inet table the iptables backend keeps while it has
	// networks, so that either backend sees the other in one netlink read.
	iptMarkerTable = "moor-iptables"
	iptMarkerChain = "in-use"
	netChainPrefix = "net-"
	fwdChainSuffix = "-fwd"
	natChainSuffix = "-nat"
)

func moorTable() *nftables.Table {
	return &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}
}

func fwdChainName(network string) string { return netChainPrefix + network + fwdChainSuffix }
func natChainName(network string) string { return netChainPrefix + network + natChainSuffix }

// nftRule is a rule to add: its chain, its label and its expressions.
type nftRule struct {
	chain string
	label label
	exprs []expr.Any
}

// newNFTRule builds a rule, putting the checksum of its expressions into the label.
func newNFTRule(chain string, l label, exprs []expr.Any) nftRule {
	parts := make([]any, 0, len(exprs)+1)
	parts = append(parts, chain)
	for _, e := range exprs {
		parts = append(parts, e)
	}
	l.Sum = contentSum(parts...)
	return nftRule{chain: chain, label: l, exprs: exprs}
}

func (r nftRule) rule(t *nftables.Table) *nftables.Rule {
	return &nftables.Rule{Table: t, Chain: &nftables.Chain{Name: r.chain, Table: t}, Exprs: r.exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, r.label.String())}
}

// ruleLabel reads the label of a rule listed from the kernel.
func ruleLabel(r *nftables.Rule) (label, bool) {
	s, ok := userdata.GetString(r.UserData, userdata.TypeComment)
	if !ok {
		return label{}, false
	}
	return parseLabel(s)
}

type baseChain struct {
	name string
	typ  nftables.ChainType
	hook *nftables.ChainHook
	prio *nftables.ChainPriority
}

var nftBaseChains = []baseChain{
	{chainPrerouting, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest},
	{chainOutput, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest},
	{chainPostrouting, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource},
	{chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter},
	{chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter},
}

// nftBaseRules are the rules of the base chains; they do not depend on any network.
func nftBaseRules() []nftRule {
	base := func(chain, name string, exprs ...[]expr.Any) nftRule {
		return newNFTRule(chain, label{Base: name}, join(exprs...))
	}
	toHostports := one(verdict(expr.VerdictJump, chainHostports))
	drop := one(verdict(expr.VerdictDrop, ""))
	ret := one(verdict(expr.VerdictReturn, ""))
	var out []nftRule
	for _, chain := range []string{chainPrerouting, chainOutput} {
		for _, f := range []family{fam4, fam6} {
			set := map[family]string{fam4: setDNSGW4, fam6: setDNSGW6}[f]
			for _, proto := range []string{"udp", "tcp"} {
				out = append(out, base(chain, ruleDNSGuard+"-"+f.String()+"-"+proto+"-"+chain, nfproto(f),
					l4dport(protocols[proto], dnsPort), inSet(daddrLoad(f), set, false), ret))
			}
		}
	}
	return append(out,
		base(chainPrerouting, "prerouting", fibLocal(), toHostports),
		base(chainOutput, "output", fibLocal(), toHostports),
		base(chainPostrouting, "postrouting-in", vmap(expr.MetaKeyIIFNAME, setNat)),
		base(chainPostrouting, "postrouting-out", vmap(expr.MetaKeyOIFNAME, setNat)),
		base(chainForward, "forward-in", vmap(expr.MetaKeyIIFNAME, setFwd)),
		base(chainForward, "forward-out", vmap(expr.MetaKeyOIFNAME, setFwd)),
		base(chainInput, "input-localnet", nfproto(fam4),
			inSet(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}, setBridges, false),
			addr(fam4, false, loopback4, expr.CmpOpEq), ctNotEstablished(), drop),
	)
}

// nftSets returns the table's sets: the two verdict maps and the bridge set.
func nftSets(t *nftables.Table) (fwd, nat, bridges *nftables.Set) {
	return ifnameSet(t, setFwd, true), ifnameSet(t, setNat, true), ifnameSet(t, setBridges, false)
}

// gatewaySets returns the sets of gateway addresses, by family.
func gatewaySets(t *nftables.Table) map[family]*nftables.Set {
	return map[family]*nftables.Set{fam4: addrSet(t, setDNSGW4, fam4), fam6: addrSet(t, setDNSGW6, fam6)}
}

// gatewayElements are the network's elements of the gateway sets.
func gatewayElements(p netPlan) map[family][]nftables.SetElement {
	out := map[family][]nftables.SetElement{}
	comment := label{Net: p.Name}.String()
	for f, gws := range p.gateways {
		for _, gw := range gws {
			out[f] = append(out[f], nftables.SetElement{Key: []byte(gw), Comment: comment})
		}
	}
	return out
}

// nftState is what a read found in moor's table: its chains and, for the chains read,
// the labels of their moor rules in order.
type nftState struct {
	chains    map[string]bool
	labels    map[string][]label
	iptMarker bool // the iptables backend's marker table exists
	userChain bool // the operator's chain (UserTable/UserChain) exists
}

// chainsDiffer tells whether queueChains would create or rewrite one of the chains.
func chainsDiffer(st nftState, chains []string, want []nftRule) bool {
	byChain := map[string][]label{}
	for _, r := range want {
		byChain[r.chain] = append(byChain[r.chain], r.label)
	}
	for _, name := range chains {
		if !st.chains[name] || !sameLabels(st.labels[name], byChain[name]) {
			return true
		}
	}
	return false
}

// queueChains queues the rules of want chain by chain, leaving alone a chain whose moor
// rules already carry exactly the wanted labels (checksums included) and flushing and
// refilling the others. Missing regular chains are created; base chains must have been
// queued already. Rewrites are avoided because a commit that deletes rules or re-adds a
// chain waits for an RCU grace period in the kernel (~10 ms).
func queueChains(c *nftables.Conn, t *nftables.Table, st nftState, chains []string, want []nftRule) {
	byChain := map[string][]nftRule{}
	for _, r := range want {
		byChain[r.chain] = append(byChain[r.chain], r)
	}
	for _, name := range chains {
		rules := byChain[name]
		labels := make([]label, 0, len(rules))
		for _, r := range rules {
			labels = append(labels, r.label)
		}
		ch := &nftables.Chain{Name: name, Table: t}
		switch {
		case !st.chains[name]:
			c.AddChain(ch)
		case sameLabels(st.labels[name], labels):
			continue
		default:
			c.FlushChain(ch)
		}
		for _, r := range rules {
			c.AddRule(r.rule(t))
		}
	}
}

// queueSkeleton queues the table, its missing base chains and the hostports chain, its
// sets, and the base rules where they differ. Existing chains are never re-added.
// skeletonInPlace reports whether st shows the skeleton complete: every base chain and
// hostports with exactly the wanted rules. Those rules reference every set and map of the
// skeleton, which therefore exist too (a referenced set cannot be deleted).
func skeletonInPlace(st nftState) bool {
	names := append(baseChainNames(), chainHostports)
	for _, n := range names {
		if !st.chains[n] {
			return false
		}
	}
	return !chainsDiffer(st, names, append(nftBaseRules(), hostportsRules()...))
}

func queueSkeleton(c *nftables.Conn, t *nftables.Table, st nftState) error {
	c.AddTable(t)
	var names []string
	for _, bc := range nftBaseChains {
		names = append(names, bc.name)
		if !st.chains[bc.name] {
			c.AddChain(&nftables.Chain{Name: bc.name, Table: t, Type: bc.typ, Hooknum: bc.hook, Priority: bc.prio})
		}
	}
	if !st.chains[chainHostports] {
		c.AddChain(&nftables.Chain{Name: chainHostports, Table: t})
	}
	names = append(names, chainHostports)
	fwd, nat, bridges := nftSets(t)
	gw := gatewaySets(t)
	sets := []*nftables.Set{fwd, nat, bridges, gw[fam4], gw[fam6]}
	maps := portMaps(t)
	for _, name := range portMapNames {
		sets = append(sets, maps[name])
	}
	for _, s := range sets {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	base := st
	base.chains = map[string]bool{} // base chains exist now (queued above): refill only
	for _, n := range names {
		base.chains[n] = true
	}
	queueChains(c, t, base, names, append(nftBaseRules(), hostportsRules()...))
	return nil
}

// nftNetworkRules are the rules of the network's own chains.
func nftNetworkRules(p netPlan) []nftRule {
	br := p.Bridge
	fwd, nat := fwdChainName(p.Name), natChainName(p.Name)
	drop := one(verdict(expr.VerdictDrop, ""))
	masq := one(&expr.Masq{})
	var out []nftRule
	add := func(chain, rule string, exprs ...[]expr.Any) {
		out = append(out, newNFTRule(chain, p.label(rule), join(exprs...)))
	}
	switch {
	case p.Internal:
		add(fwd, ruleInternalOut, iif(expr.CmpOpEq, br), oif(expr.CmpOpNeq, br), drop)
		add(fwd, ruleInternalIn, oif(expr.CmpOpEq, br), iif(expr.CmpOpNeq, br), drop)
	case p.Isolate:
		add(fwd, ruleIsolateOut, iif(expr.CmpOpEq, br), oif(expr.CmpOpNeq, br),
			inSet(&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1}, setBridges, false), drop)
		add(fwd, ruleIsolateIn, oif(expr.CmpOpEq, br), iif(expr.CmpOpNeq, br),
			inSet(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}, setBridges, false), drop)
	}
	if !p.Internal {
		for _, f := range p.families() {
			if p.mode(f) == GatewayIsolated {
				add(fwd, ruleInternalOut+"-"+f.String(), nfproto(f), iif(expr.CmpOpEq, br), oif(expr.CmpOpNeq, br), drop)
				add(fwd, ruleInternalIn+"-"+f.String(), nfproto(f), oif(expr.CmpOpEq, br), iif(expr.CmpOpNeq, br), drop)
			}
		}
	}
	if p.NoICC {
		// Container to container through the host's routing (a container may use the
		// gateway's MAC for a neighbour); published ports (DNAT) stay reachable.
		add(fwd, ruleNoICC, iif(expr.CmpOpEq, br), oif(expr.CmpOpEq, br), ctNotDNAT(), drop)
	}
	// New connections into the bridge from a non-moor interface get in only through a
	// published port (DNAT); replies, containers' own traffic and traffic from the
	// host (output, not forward) are not concerned. Other moor bridges are left to
	// the isolation rules above. Routed families are open; with every family in NAT
	// mode the rule matches any family (one rule, as before gateway modes existed).
	routedIn := func(name string, match []expr.Any) {
		add(fwd, name, match, oif(expr.CmpOpEq, br), iif(expr.CmpOpNeq, br),
			inSet(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}, setBridges, true),
			ctNotEstablished(), ctNotDNAT(), drop)
	}
	if natFams, all := p.natFamilies(); all && !p.Internal {
		routedIn(ruleRoutedIn, nil)
	} else {
		for _, f := range natFams {
			routedIn(ruleRoutedIn+"-"+f.String(), nfproto(f))
		}
	}
	for _, f := range p.families() {
		for _, s := range p.subnets[f] {
			add(nat, ruleHairpin+":"+s.String(), nfproto(f), oif(expr.CmpOpEq, br), ctDNAT(),
				addr(f, true, s, expr.CmpOpEq), addr(f, false, s, expr.CmpOpEq), masq)
		}
	}
	if len(p.subnets[fam4]) > 0 {
		add(nat, ruleLocalnet, nfproto(fam4), oif(expr.CmpOpEq, br), ctDNAT(),
			addr(fam4, true, loopback4, expr.CmpOpEq), masq)
	}
	for _, f := range p.families() {
		if !p.masqFamily(f) {
			continue
		}
		mcast := multicast4
		if f == fam6 {
			mcast = multicast6
		}
		name, action := ruleMasq, masq
		if ip := p.snatFor(f); ip != nil {
			name, action = ruleSNAT, snatTo(f, ip)
		}
		for _, s := range p.subnets[f] {
			add(nat, name+":"+s.String(), nfproto(f), iif(expr.CmpOpEq, br), oif(expr.CmpOpNeq, br),
				addr(f, true, s, expr.CmpOpEq), addr(f, false, mcast, expr.CmpOpNeq), action)
		}
	}
	return out
}

// bridgeElements returns the set elements that bind the bridge to the network: in the
// two verdict maps (jump to the network's chains) and in the bridge set.
func bridgeElements(network, bridge string) (fwd, nat, bridges nftables.SetElement) {
	comment := label{Net: network}.String()
	key := ifname(bridge)
	fwd = nftables.SetElement{Key: key, Comment: comment, VerdictData: verdict(expr.VerdictJump, fwdChainName(network))}
	nat = nftables.SetElement{Key: key, Comment: comment, VerdictData: verdict(expr.VerdictJump, natChainName(network))}
	bridges = nftables.SetElement{Key: key, Comment: comment}
	return fwd, nat, bridges
}

// bridgeName turns a set key back into the interface name.
func bridgeName(key []byte) string {
	for i, b := range key {
		if b == 0 {
			return string(key[:i])
		}
	}
	return string(key)
}

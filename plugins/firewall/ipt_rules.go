package firewall

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Tables and chains of the iptables backend (see the package doc for the layout).
const (
	tableFilter    = "filter"
	tableNat       = "nat"
	iptForward     = "MOOR-FORWARD"
	iptIsolation1  = "MOOR-ISOLATION-1"
	iptIsolation2  = "MOOR-ISOLATION-2"
	iptIsolation3  = "MOOR-ISOLATION-3"
	iptInput       = "MOOR-INPUT"
	iptRoutedIn    = "MOOR-ROUTED-IN"
	iptHostports   = "MOOR-HOSTPORTS"
	iptPostrouting = "MOOR-POSTROUTING"
	builtinForward = "FORWARD"
	builtinInput   = "INPUT"
	builtinPre     = "PREROUTING"
	builtinOutput  = "OUTPUT"
	builtinPost    = "POSTROUTING"
	targetAccept   = "ACCEPT"
	targetDrop     = "DROP"
	targetMasq     = "MASQUERADE"
	targetDNAT     = "DNAT"
	commentModule  = "comment"
	commentFlag    = "--comment"
	appendFlag     = "-A"
)

// Network-level rule names that only the iptables backend has.
const (
	ruleIsolateTargetOut = "isolation-drop-out" // MOOR-ISOLATION-2: -o BR -j DROP
	ruleIsolateTargetIn  = "isolation-drop-in"  // MOOR-ISOLATION-3: -i BR -j DROP
	ruleAcceptEst        = "accept-established"
	ruleAcceptOut        = "accept-out"    // -i BR -j ACCEPT (not internal)
	ruleAcceptBridge     = "accept-bridge" // -i BR -o BR -j ACCEPT (internal)
	ruleLocalnetGuard    = "localnet-guard"
	ruleAcceptRouted     = "accept-routed" // -o BR -j ACCEPT (Routed: any port from outside)
)

// iptChains lists moor's chains per table, in the order they are created.
var iptChains = []chainRef{
	{tableFilter, iptForward}, {tableFilter, iptIsolation1}, {tableFilter, iptIsolation2},
	{tableFilter, iptIsolation3}, {tableFilter, iptInput}, {tableFilter, iptRoutedIn},
	{tableNat, iptHostports}, {tableNat, iptPostrouting},
}

// iptRule is one rule: matches, then the label as a comment, then the target.
type iptRule struct {
	table, chain string
	label        label
	matches      []string
	target       []string
	insert       bool // insert at the top instead of appending
}

// newIPTRule builds a rule, putting the checksum of its content into the label.
func newIPTRule(table, chain string, l label, matches, target []string, insert bool) iptRule {
	l.Sum = contentSum(table, chain, matches, target)
	return iptRule{table: table, chain: chain, label: l, matches: matches, target: target, insert: insert}
}

func (r iptRule) args() []string {
	out := append([]string{}, r.matches...)
	out = append(out, "-m", commentModule, commentFlag, r.label.String(), "-j")
	return append(out, r.target...)
}

// iptSkeleton are the jumps into moor's chains, with the order-critical isolation jump
// on top of MOOR-FORWARD.
func iptSkeleton() []iptRule {
	jump := func(table, chain, name string, matches []string, to string) iptRule {
		return newIPTRule(table, chain, label{Base: name}, matches, []string{to}, true)
	}
	local := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
	return []iptRule{
		// Last rule of MOOR-ROUTED-IN: new connections routed in from a non-moor
		// interface, not DNATed, are dropped (the networks' RETURN rules come first).
		newIPTRule(tableFilter, iptRoutedIn, label{Base: "routed-in-drop"}, nil, []string{targetDrop}, false),
		jump(tableFilter, builtinForward, "forward", nil, iptForward),
		jump(tableFilter, iptForward, "isolation", nil, iptIsolation1),
		// Inserted after the isolation jump, so on top: the operator's chain comes
		// before every moor rule of MOOR-FORWARD.
		jump(tableFilter, iptForward, "user", nil, IPTUserChain),
		jump(tableFilter, builtinInput, "input", nil, iptInput),
		jump(tableNat, builtinPre, "prerouting", local, iptHostports),
		jump(tableNat, builtinOutput, "output", local, iptHostports),
		jump(tableNat, builtinPost, "postrouting", nil, iptPostrouting),
	}
}

// iptNetworkRules are the network's rules in family f.
func iptNetworkRules(p netPlan, f family) []iptRule {
	br := p.Bridge
	var out []iptRule
	add := func(table, chain, rule string, target []string, matches ...string) {
		out = append(out, newIPTRule(table, chain, p.label(rule), matches, target, false))
	}
	drop, accept, masq := []string{targetDrop}, []string{targetAccept}, []string{targetMasq}
	internal := p.internalIn(f)
	switch {
	case p.Internal:
		add(tableFilter, iptIsolation1, ruleInternalOut, drop, "-i", br, "!", "-o", br)
		add(tableFilter, iptIsolation1, ruleInternalIn, drop, "-o", br, "!", "-i", br)
	case internal: // isolated gateway mode in this family
		add(tableFilter, iptIsolation1, ruleInternalOut+"-"+f.String(), drop, "-i", br, "!", "-o", br)
		add(tableFilter, iptIsolation1, ruleInternalIn+"-"+f.String(), drop, "-o", br, "!", "-i", br)
	}
	if p.Isolate && !internal {
		add(tableFilter, iptIsolation1, ruleIsolateOut, []string{iptIsolation2}, "-i", br, "!", "-o", br)
		add(tableFilter, iptIsolation1, ruleIsolateIn, []string{iptIsolation3}, "-o", br, "!", "-i", br)
	}
	if p.NoICC {
		add(tableFilter, iptIsolation1, ruleNoICC, drop, "-i", br, "-o", br, "-m", "conntrack", "!", "--ctstate", "DNAT")
	}
	if !internal && p.mode(f) == GatewayNAT {
		add(tableFilter, iptIsolation1, ruleRoutedIn, []string{iptRoutedIn},
			"-o", br, "!", "-i", br, "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT")
	}
	add(tableFilter, iptIsolation2, ruleIsolateTargetOut, drop, "-o", br)
	add(tableFilter, iptIsolation3, ruleIsolateTargetIn, drop, "-i", br)
	// From a moor bridge: not "routed in from outside" (isolation decides).
	out = append(out, newIPTRule(tableFilter, iptRoutedIn, p.label(ruleRoutedIn+"-bridge"), []string{"-i", br}, []string{"RETURN"}, true))
	for _, gw := range p.gateways[f] {
		for _, proto := range []string{"udp", "tcp"} {
			out = append(out, newIPTRule(tableNat, iptHostports, p.label(ruleDNSGuard+":"+gw.String()+"/"+proto),
				[]string{"-d", hostAddr(gw).String(), "-p", proto, "-m", proto, "--dport", strconv.Itoa(dnsPort)},
				[]string{"RETURN"}, true))
		}
	}
	add(tableFilter, iptForward, ruleAcceptEst, accept, "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
	if internal {
		add(tableFilter, iptForward, ruleAcceptBridge, accept, "-i", br, "-o", br)
	} else {
		add(tableFilter, iptForward, ruleAcceptOut, accept, "-i", br)
	}
	if p.mode(f) == GatewayRouted && !internal {
		add(tableFilter, iptForward, ruleAcceptRouted, accept, "-o", br)
	}
	for _, s := range p.subnets[f] {
		add(tableNat, iptPostrouting, ruleHairpin+":"+s.String(), masq,
			"-s", s.String(), "-d", s.String(), "-o", br, "-m", "conntrack", "--ctstate", "DNAT")
	}
	if f == fam4 {
		add(tableFilter, iptInput, ruleLocalnetGuard, drop,
			"-i", br, "-d", loopback4.String(), "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED")
		add(tableNat, iptPostrouting, ruleLocalnet, masq,
			"-s", loopback4.String(), "-o", br, "-m", "conntrack", "--ctstate", "DNAT")
	}
	if p.masqFamily(f) {
		name, target := ruleMasq, masq
		if ip := p.snatFor(f); ip != nil {
			name, target = ruleSNAT, []string{"SNAT", "--to-source", ip.String()}
		}
		mcast := multicast4
		if f == fam6 {
			mcast = multicast6
		}
		// Only forwarded traffic: POSTROUTING cannot match the input bridge (nftables
		// does), so the host's own addresses are left out instead. Otherwise the host's
		// packets from the gateway address to itself (through lo) are masqueraded to
		// 127.0.0.1, and moor-dns refuses the ADD's own check query.
		for _, s := range p.subnets[f] {
			add(tableNat, iptPostrouting, name+":"+s.String(), target,
				"-s", s.String(), "!", "-o", br, "!", "-d", mcast.String(), "-m", "addrtype", "!", "--src-type", "LOCAL")
		}
	}
	return out
}

// iptPortRules are the attachment's rules in family f: DNAT and the forward ACCEPT.
func iptPortRules(p netPlan, k AttachmentKey, rules []portRule, f family) []iptRule {
	var out []iptRule
	for _, r := range rules {
		if r.fam != f {
			continue
		}
		var dnat []string
		switch {
		case r.hostIP != nil:
			dnat = append(dnat, "-d", hostAddr(r.hostIP).String())
		case f == fam4:
			dnat = append(dnat, "!", "-d", loopback4.String())
		default:
			dnat = append(dnat, "!", "-d", loopback6.String())
		}
		dnat = append(dnat, "-p", r.proto, "-m", r.proto, "--dport", strconv.Itoa(int(r.hostPort)))
		dest := net.JoinHostPort(r.containerIP.String(), strconv.Itoa(int(r.containerPort)))
		accept := []string{"-d", hostAddr(r.containerIP).String(), "!", "-i", p.Bridge, "-o", p.Bridge,
			"-p", r.proto, "-m", r.proto, "--dport", strconv.Itoa(int(r.containerPort))}
		out = append(out,
			newIPTRule(tableNat, iptHostports, r.label(k, ruleDNAT), dnat, []string{targetDNAT, "--to-destination", dest}, false),
			newIPTRule(tableFilter, iptForward, r.label(k, ruleAcceptPort), accept, []string{targetAccept}, false))
	}
	return out
}

// iptLine is one rule listed by "iptables -S <chain>".
type iptLine struct {
	args  []string // as printed after "-A <chain>", usable for "-D <chain>"
	label label
}

// parseIPTLines keeps the moor-labelled rules of a chain listing.
func parseIPTLines(lines []string) ([]iptLine, error) {
	var out []iptLine
	for _, line := range lines {
		tok, err := splitArgs(line)
		if err != nil {
			return nil, err
		}
		if len(tok) < 2 || tok[0] != appendFlag {
			continue // -N/-P lines
		}
		args := tok[2:]
		for i := 0; i+1 < len(args); i++ {
			if args[i] != commentFlag {
				continue
			}
			if l, ok := parseLabel(args[i+1]); ok {
				out = append(out, iptLine{args: args, label: l})
			}
			break
		}
	}
	return out, nil
}

// splitArgs splits an "iptables -S" line into arguments: words separated by spaces,
// double quotes group, and backslash escapes the next character inside quotes.
func splitArgs(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			quoted, inWord = !quoted, true
		case ch == ' ' && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("firewall: unterminated quote in iptables output %q", line)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

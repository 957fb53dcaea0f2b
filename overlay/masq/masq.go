// Package masq gives an overlay network its ipMasq, its icc false and its internal.
// Masquerade: traffic from the host's subnet to any address outside the overlay's range
// is masqueraded, traffic inside the range (to containers of this or another host) keeps
// its source address. icc false (NoICC): a container cannot open a connection to any
// address of the overlay's range but its own host's gateway (which the host answers
// itself, not forwarded): neither to a neighbour on the same bridge nor to a container of
// another host, whatever carries it (VXLAN, WireGuard, direct routing); replies to
// connections opened towards the container (the host, another host) still pass. Internal:
// nothing is forwarded between the bridge and addresses outside the range, either way.
//
// The rules live in moor-overlay's own nftables table, "ip moor-overlay": a postrouting
// NAT chain with at most one rule per network, and a forward filter chain with at most
// one rule per network and kind, labelled in its comment with the network's name (and
// kind) and a checksum of its parameters:
//
//	postrouting:  ip saddr <host subnet> ip daddr != <range> ip daddr != 224.0.0.0/4 masquerade
//	              (snat to <address> with Rule.SNAT)
//	no-icc:       iifname <bridge> ip daddr <range> ct state != established,related drop
//	internal-out: iifname <bridge> ip daddr != <range> drop
//	internal-in:  oifname <bridge> ip saddr != <range> drop
//
// The forward rules see what the host routes; frames the bridge switches between two
// local ports reach them only through br_netfilter, which the caller turns on for the
// bridge, or isolates the ports where the kernel has none (firewall.NoICCBridge). Each
// host enforces icc for the connections its own containers open (every host of a network
// has the same config), so a host reaching another host's containers is not affected.
//
// The bridge driver's firewall package is not used: its masquerade matches on the bridge
// (traffic leaving it), which would also rewrite traffic routed to other hosts through the
// VXLAN device. Ensure writes only when the label differs, in one netlink batch.
//
// What it does not do: published ports, or IPv6.
package masq

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// Names in the kernel.
const (
	TableName = "moor-overlay"
	ChainName = "postrouting"

	// ForwardChainName is the chain of the icc rules.
	ForwardChainName = "forward"

	labelPrefix = "moor-overlay net="
	sumSep      = " sum="
	sumLen      = 8 // bytes of the checksum kept in the label

	ipv4SaddrOffset = 12
	ipv4DaddrOffset = 16
	ipv4AddrLen     = 4
	ctStateLen      = 4
)

var multicast = netip.MustParsePrefix("224.0.0.0/4")

// Rule is one network's masquerade.
type Rule struct {
	Network    string
	HostSubnet netip.Prefix
	Range      netip.Prefix
	// SNAT, when valid, is the source address the traffic leaves with (snatAddress),
	// instead of the outgoing interface's (masquerade).
	SNAT netip.Addr
}

func (r Rule) label() string {
	in := r.Network + "\x00" + r.HostSubnet.String() + "\x00" + r.Range.String()
	if r.SNAT.IsValid() {
		in += "\x00snat " + r.SNAT.String() // absent otherwise: labels of before stay valid
	}
	sum := sha256.Sum256([]byte(in))
	return labelPrefix + r.Network + sumSep + hex.EncodeToString(sum[:sumLen])
}

// Error is a change or read the kernel refused (code 106).
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("overlay masquerade: %s: %v", e.Op, e.Err) }

// Unwrap exposes the cause.
func (e *Error) Unwrap() error { return e.Err }

// CNICode implements codes.Coded.
func (e *Error) CNICode() uint { return codes.FirewallFailure }

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

func chain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Name: ChainName, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
}

func forwardChain(t *nftables.Table) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: ForwardChainName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy}
}

// chainOf is one of the table's chains: how to create it.
type chainOf func(*nftables.Table) *nftables.Chain

// conn opens nftables in the namespace of nsFd (0: the calling thread's).
func conn(nsFd int) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if nsFd > 0 {
		opts = append(opts, nftables.WithNetNSFd(nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, &Error{Op: "opening nftables", Err: err}
	}
	return c, nil
}

// labelled is one of the table's rules with its label.
type labelled struct {
	label string
	rule  *nftables.Rule
}

// open connects and lists the network rules of one chain.
func open(nsFd int, ch chainOf) (*nftables.Conn, []labelled, error) {
	c, err := conn(nsFd)
	if err != nil {
		return nil, nil, err
	}
	have, err := rules(c, ch)
	return c, have, err
}

// rules lists the network rules of a chain; a missing table or chain has none.
func rules(c *nftables.Conn, ch chainOf) ([]labelled, error) {
	t := table()
	rs, err := c.GetRules(t, ch(t))
	if err != nil {
		if isMissing(err) {
			return nil, nil
		}
		return nil, &Error{Op: "listing rules of " + TableName, Err: err}
	}
	var out []labelled
	for _, r := range rs {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && strings.HasPrefix(s, labelPrefix) {
			out = append(out, labelled{s, r})
		}
	}
	return out, nil
}

func isMissing(err error) bool {
	return strings.Contains(err.Error(), unix.ENOENT.Error())
}

// network returns a label's key: the network's name, with the rule's kind after it in
// the forward chain.
func network(label string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(label, labelPrefix), sumSep)
	return name
}

// networkOf is the network's name in a key.
func networkOf(key string) string {
	name, _, _ := strings.Cut(key, " ")
	return name
}

// Ensure installs r, replacing the network's earlier rule, and leaves exactly one rule for
// the network (two ADDs racing may both have added one). created reports that the
// network had no rule before (the caller's rollback removes it).
func Ensure(nsFd int, r Rule) (created bool, err error) {
	return ensure(nsFd, chain, r.Network, r.label(), exprs(r), "the masquerade")
}

// Remove deletes the network's masquerade, and the table when nothing is left in it.
// Nothing to remove is fine.
func Remove(nsFd int, networkName string) error {
	return remove(nsFd, chain, networkName, "the masquerade")
}

// Present reports whether r is installed as given, once, and the network has no other rule.
func Present(nsFd int, r Rule) (bool, error) {
	return present(nsFd, chain, r.Network, r.label())
}

// NoICC is one network's icc false on this host.
type NoICC struct {
	Network string
	Bridge  string
	Range   netip.Prefix
}

// Rule kinds of the forward chain, in a label after the network's name (network names
// have no spaces), so that each kind of a network is kept, replaced and removed alone.
const (
	kindNoICC       = " rule=no-icc"
	kindInternalOut = " rule=internal-out"
	kindInternalIn  = " rule=internal-in"
)

// forwardLabel is the label of a forward rule of the network's kind; parts go into the
// checksum.
func forwardLabel(network, kind string, parts ...string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + network + "\x00" + strings.Join(parts, "\x00")))
	return labelPrefix + network + kind + sumSep + hex.EncodeToString(sum[:sumLen])
}

func (r NoICC) label() string {
	return forwardLabel(r.Network, kindNoICC, r.Bridge, r.Range.String())
}

// EnsureNoICC is Ensure for the network's icc rule.
func EnsureNoICC(nsFd int, r NoICC) (created bool, err error) {
	return ensure(nsFd, forwardChain, r.Network+kindNoICC, r.label(), noICCExprs(r), "icc false")
}

// RemoveNoICC is Remove for the network's icc rule.
func RemoveNoICC(nsFd int, networkName string) error {
	return remove(nsFd, forwardChain, networkName+kindNoICC, "icc false")
}

// PresentNoICC is Present for the network's icc rule.
func PresentNoICC(nsFd int, r NoICC) (bool, error) {
	return present(nsFd, forwardChain, r.Network+kindNoICC, r.label())
}

// Internal is one internal network on this host: nothing is forwarded between the
// bridge and any address outside the overlay's range, either way. The host itself still
// reaches its containers (that is not forwarded), and so do the other hosts (their
// addresses on the overlay are in the range).
type Internal struct {
	Network string
	Bridge  string
	Range   netip.Prefix
}

func (r Internal) labels() (out, in string) {
	return forwardLabel(r.Network, kindInternalOut, r.Bridge, r.Range.String()),
		forwardLabel(r.Network, kindInternalIn, r.Bridge, r.Range.String())
}

// EnsureInternal installs the network's two internal rules (see Ensure); created reports
// that the network had neither.
func EnsureInternal(nsFd int, r Internal) (created bool, err error) {
	out, in := r.labels()
	createdOut, err := ensure(nsFd, forwardChain, r.Network+kindInternalOut, out, internalExprs(r, true), "internal")
	if err != nil {
		return createdOut, err
	}
	createdIn, err := ensure(nsFd, forwardChain, r.Network+kindInternalIn, in, internalExprs(r, false), "internal")
	return createdOut && createdIn, err
}

// RemoveInternal removes the network's internal rules.
func RemoveInternal(nsFd int, networkName string) error {
	return errors.Join(remove(nsFd, forwardChain, networkName+kindInternalOut, "internal"),
		remove(nsFd, forwardChain, networkName+kindInternalIn, "internal"))
}

// PresentInternal reports whether both internal rules are installed as given, once.
func PresentInternal(nsFd int, r Internal) (bool, error) {
	out, in := r.labels()
	okOut, err := present(nsFd, forwardChain, r.Network+kindInternalOut, out)
	if err != nil || !okOut {
		return false, err
	}
	return present(nsFd, forwardChain, r.Network+kindInternalIn, in)
}

func ensure(nsFd int, ch chainOf, key, want string, ruleExprs []expr.Any, what string) (created bool, err error) {
	c, have, err := open(nsFd, ch)
	if err != nil {
		return false, err
	}
	keep, changes := false, false
	created = true
	for _, x := range have {
		if network(x.label) != key {
			continue
		}
		created = false
		if x.label == want && !keep {
			keep = true
			continue
		}
		if err := c.DelRule(x.rule); err != nil {
			return false, &Error{Op: "queueing the removal of " + x.label, Err: err}
		}
		changes = true
	}
	if !keep {
		t := c.AddTable(table())
		chain := c.AddChain(ch(t))
		c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: ruleExprs, UserData: userdata.AppendString(nil, userdata.TypeComment, want)})
		changes = true
	}
	if !changes {
		return false, nil
	}
	if err := c.Flush(); err != nil {
		return false, &Error{Op: "installing " + what + " of " + networkOf(key), Err: err}
	}
	return created, nil
}

// remove deletes the rules of one chain under key (a network, with its kind in the
// forward chain), and the table when neither chain has a rule left.
func remove(nsFd int, ch chainOf, key, what string) error {
	c, have, err := open(nsFd, ch)
	if err != nil {
		return err
	}
	left := 0
	queued := false
	for _, x := range have {
		if network(x.label) != key {
			left++
			continue
		}
		if err := c.DelRule(x.rule); err != nil {
			return &Error{Op: "queueing the removal of " + x.label, Err: err}
		}
		queued = true
	}
	if !queued {
		return nil
	}
	for _, other := range []chainOf{chain, forwardChain} {
		if other(table()).Name == ch(table()).Name {
			continue
		}
		rest, err := rules(c, other)
		if err != nil {
			return err
		}
		left += len(rest)
	}
	if left == 0 {
		c.DelTable(table())
	}
	if err := c.Flush(); err != nil {
		return &Error{Op: "removing " + what + " of " + networkOf(key), Err: err}
	}
	return nil
}

func present(nsFd int, ch chainOf, key, want string) (bool, error) {
	_, have, err := open(nsFd, ch)
	if err != nil {
		return false, err
	}
	n := 0
	for _, x := range have {
		if network(x.label) == key {
			if x.label != want {
				return false, nil
			}
			n++
		}
	}
	return n == 1, nil
}

// internalExprs builds, out: iifname Bridge, ip daddr not in Range, drop; in: oifname
// Bridge, ip saddr not in Range, drop.
func internalExprs(r Internal, out bool) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, r.Bridge)
	key, offset := expr.MetaKeyIIFNAME, uint32(ipv4DaddrOffset)
	if !out {
		key, offset = expr.MetaKeyOIFNAME, ipv4SaddrOffset
	}
	exprs := []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name}}
	exprs = append(exprs, match(offset, r.Range, expr.CmpOpNeq)...)
	return append(exprs, &expr.Verdict{Kind: expr.VerdictDrop})
}

// noICCExprs builds: iifname Bridge, ip daddr in Range, ct state neither established nor
// related, drop.
func noICCExprs(r NoICC) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, r.Bridge)
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
	}
	out = append(out, match(ipv4DaddrOffset, r.Range, expr.CmpOpEq)...)
	est := binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	return append(out,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: ctStateLen, Mask: est, Xor: make([]byte, ctStateLen)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, ctStateLen)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// exprs builds: ip saddr in HostSubnet, ip daddr not in Range, not multicast, masquerade.
func exprs(r Rule) []expr.Any {
	out := match(ipv4SaddrOffset, r.HostSubnet, expr.CmpOpEq)
	out = append(out, match(ipv4DaddrOffset, r.Range, expr.CmpOpNeq)...)
	out = append(out, match(ipv4DaddrOffset, multicast, expr.CmpOpNeq)...)
	if r.SNAT.IsValid() {
		a := r.SNAT.As4()
		return append(out,
			&expr.Immediate{Register: 1, Data: a[:]},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
	}
	return append(out, &expr.Masq{})
}

// match compares the masked IPv4 address at offset with p.
func match(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := prefixMask(p.Bits())
	addr := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: ipv4AddrLen},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: ipv4AddrLen, Mask: mask, Xor: make([]byte, ipv4AddrLen)},
		&expr.Cmp{Op: op, Register: 1, Data: addr[:]},
	}
}

func prefixMask(bits int) []byte {
	m := make([]byte, ipv4AddrLen)
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

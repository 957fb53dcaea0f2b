// Package masq gives an overlay network its ipMasq: traffic from the host's subnet to any
// address outside the overlay's range is masqueraded, traffic inside the range (to
// containers of this or another host) keeps its source address.
//
// The rules live in moor-overlay's own nftables table, "ip moor-overlay", one postrouting
// NAT chain with one rule per network, labelled in its comment with the network's name and
// a checksum of its parameters:
//
//	ip saddr <host subnet> ip daddr != <range> ip daddr != 224.0.0.0/4 masquerade
//
// The bridge driver's firewall package is not used: its masquerade matches on the bridge
// (traffic leaving it), which would also rewrite traffic routed to other hosts through the
// VXLAN device. Ensure writes only when the label differs, in one netlink batch.
//
// What it does not do: filtering or published ports, or IPv6.
package masq

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// Names in the kernel.
const (
	TableName = "moor-overlay"
	ChainName = "postrouting"

	labelPrefix = "moor-overlay net="
	sumSep      = " sum="
	sumLen      = 8 // bytes of the checksum kept in the label

	ipv4SaddrOffset = 12
	ipv4DaddrOffset = 16
	ipv4AddrLen     = 4
)

var multicast = netip.MustParsePrefix("224.0.0.0/4")

// Rule is one network's masquerade.
type Rule struct {
	Network    string
	HostSubnet netip.Prefix
	Range      netip.Prefix
}

func (r Rule) label() string {
	sum := sha256.Sum256([]byte(r.Network + "\x00" + r.HostSubnet.String() + "\x00" + r.Range.String()))
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

// open connects and lists the network rules of the table.
func open(nsFd int) (*nftables.Conn, []labelled, error) {
	c, err := conn(nsFd)
	if err != nil {
		return nil, nil, err
	}
	have, err := rules(c)
	return c, have, err
}

// rules lists the network rules of the table; a missing table has none.
func rules(c *nftables.Conn) ([]labelled, error) {
	t := table()
	rs, err := c.GetRules(t, chain(t))
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

func network(label string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(label, labelPrefix), sumSep)
	return name
}

// Ensure installs r, replacing the network's earlier rule, and leaves exactly one rule for
// the network (two ADDs racing may both have added one). created reports that the
// network had no rule before (the caller's rollback removes it).
func Ensure(nsFd int, r Rule) (created bool, err error) {
	c, have, err := open(nsFd)
	if err != nil {
		return false, err
	}
	want := r.label()
	keep, changes := false, false
	created = true
	for _, x := range have {
		if network(x.label) != r.Network {
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
		ch := c.AddChain(chain(t))
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs(r), UserData: userdata.AppendString(nil, userdata.TypeComment, want)})
		changes = true
	}
	if !changes {
		return false, nil
	}
	if err := c.Flush(); err != nil {
		return false, &Error{Op: "installing the masquerade of " + r.Network, Err: err}
	}
	return created, nil
}

// Remove deletes the network's rule, and the table when it was the last. Nothing to
// remove is fine.
func Remove(nsFd int, networkName string) error {
	c, have, err := open(nsFd)
	if err != nil {
		return err
	}
	left := 0
	queued := false
	for _, x := range have {
		if network(x.label) != networkName {
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
	if left == 0 {
		c.DelTable(table())
	}
	if err := c.Flush(); err != nil {
		return &Error{Op: "removing the masquerade of " + networkName, Err: err}
	}
	return nil
}

// Present reports whether r is installed as given, once, and the network has no other rule.
func Present(nsFd int, r Rule) (bool, error) {
	_, have, err := open(nsFd)
	if err != nil {
		return false, err
	}
	n := 0
	for _, x := range have {
		if network(x.label) == r.Network {
			if x.label != r.label() {
				return false, nil
			}
			n++
		}
	}
	return n == 1, nil
}

// exprs builds: ip saddr in HostSubnet, ip daddr not in Range, not multicast, masquerade.
func exprs(r Rule) []expr.Any {
	out := match(ipv4SaddrOffset, r.HostSubnet, expr.CmpOpEq)
	out = append(out, match(ipv4DaddrOffset, r.Range, expr.CmpOpNeq)...)
	out = append(out, match(ipv4DaddrOffset, multicast, expr.CmpOpNeq)...)
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

package firewall

import (
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Registers used by the expressions (NFT_REG_1, NFT_REG_2; verdicts go to register 0).
const (
	regVerdict = 0
	reg1       = 1
	reg2       = 2
)

// Header offsets and lengths for payload matches.
const (
	ip4SrcOffset = 12
	ip4DstOffset = 16
	ip6SrcOffset = 8
	ip6DstOffset = 24
	ip4AddrLen   = 4
	ip6AddrLen   = 16
	thDportOff   = 2 // destination port in the TCP, UDP and SCTP headers
	thPortLen    = 2
	ctStatusLen  = 4
	ctStateLen   = 4
	fibResultLen = 4
)

// Kernel constants the library does not name.
const (
	ipsDstNAT  = 0x20 // IPS_DST_NAT in enum ip_conntrack_status
	rtnLocal   = 2    // RTN_LOCAL
	ctStateEst = 0x2  // NF_CT_STATE_BIT(IP_CT_ESTABLISHED)
	ctStateRel = 0x4  // NF_CT_STATE_BIT(IP_CT_RELATED)
)

// ifname returns the IFNAMSIZ-padded name the meta iifname/oifname expressions load.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func cmp(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: reg1, Data: data}
}

func metaCmp(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: reg1}, cmp(op, data)}
}

func iif(op expr.CmpOp, name string) []expr.Any {
	return metaCmp(expr.MetaKeyIIFNAME, op, ifname(name))
}

func oif(op expr.CmpOp, name string) []expr.Any {
	return metaCmp(expr.MetaKeyOIFNAME, op, ifname(name))
}

func nfproto(f family) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if f == fam6 {
		p = unix.NFPROTO_IPV6
	}
	return metaCmp(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{p})
}

// inSet matches the register loaded by load against a named set.
func inSet(load expr.Any, set string, invert bool) []expr.Any {
	return []expr.Any{load, &expr.Lookup{SourceRegister: reg1, SetName: set, Invert: invert}}
}

// vmap dispatches on the interface name through a verdict map.
func vmap(key expr.MetaKey, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set, DestRegister: regVerdict, IsDestRegSet: true},
	}
}

// addr matches the source (src=true) or destination address against prefix; the caller
// has matched the family with nfproto.
func addr(f family, src bool, prefix *net.IPNet, op expr.CmpOp) []expr.Any {
	off, l, ip := uint32(ip4DstOffset), uint32(ip4AddrLen), prefix.IP.To4()
	switch {
	case f == fam4 && src:
		off = ip4SrcOffset
	case f == fam6 && src:
		off, l, ip = ip6SrcOffset, ip6AddrLen, prefix.IP.To16()
	case f == fam6:
		off, l, ip = ip6DstOffset, ip6AddrLen, prefix.IP.To16()
	}
	out := []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l}}
	if ones, bits := prefix.Mask.Size(); ones != bits {
		out = append(out, &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: l,
			Mask: []byte(prefix.Mask), Xor: make([]byte, l)})
	}
	return append(out, cmp(op, []byte(ip.Mask(prefix.Mask))))
}

func hostAddr(ip net.IP) *net.IPNet {
	if ip4 := ip.To4(); ip4 != nil {
		return &net.IPNet{IP: ip4, Mask: net.CIDRMask(ip4AddrLen*8, ip4AddrLen*8)}
	}
	return &net.IPNet{IP: ip.To16(), Mask: net.CIDRMask(ip6AddrLen*8, ip6AddrLen*8)}
}

// ctDNAT matches connections whose destination was translated (ct status dnat).
func ctDNAT() []expr.Any { return ctStatusDNAT(expr.CmpOpNeq) }

// ctNotDNAT matches connections whose destination was not translated.
func ctNotDNAT() []expr.Any { return ctStatusDNAT(expr.CmpOpEq) }

func ctStatusDNAT(op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: ctStatusLen,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, ctStatusLen)},
		cmp(op, make([]byte, ctStatusLen)),
	}
}

// daddrLoad loads the destination address into register 1 (for a set lookup).
func daddrLoad(f family) expr.Any {
	if f == fam6 {
		return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ip6DstOffset, Len: ip6AddrLen}
	}
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ip4DstOffset, Len: ip4AddrLen}
}

// ctNew matches packets that are neither established nor related.
func ctNotEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: ctStateLen,
			Mask: binaryutil.NativeEndian.PutUint32(ctStateEst | ctStateRel), Xor: make([]byte, ctStateLen)},
		cmp(expr.CmpOpEq, make([]byte, ctStateLen)),
	}
}

// fibLocal matches destinations that are local addresses (fib daddr type local).
func fibLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		cmp(expr.CmpOpEq, binaryutil.NativeEndian.PutUint32(rtnLocal)),
	}
}

func l4dport(proto uint8, port uint16) []expr.Any {
	return append(metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{proto}),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: thDportOff, Len: thPortLen},
		cmp(expr.CmpOpEq, binaryutil.BigEndian.PutUint16(port)))
}

func dnatTo(f family, ip net.IP, port uint16) []expr.Any {
	natFam, data := uint32(unix.NFPROTO_IPV4), []byte(ip.To4())
	if f == fam6 {
		natFam, data = unix.NFPROTO_IPV6, []byte(ip.To16())
	}
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: data},
		&expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFam, RegAddrMin: reg1, RegProtoMin: reg2, Specified: true},
	}
}

func verdict(kind expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: kind, Chain: chain}
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// one wraps a single expression for join.
func one(e expr.Any) []expr.Any { return []expr.Any{e} }

// addrSet describes a set of IPv4 or IPv6 addresses.
func addrSet(t *nftables.Table, name string, f family) *nftables.Set {
	kt := nftables.TypeIPAddr
	if f == fam6 {
		kt = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: t, Name: name, KeyType: kt}
}

// ifnameSet describes a set or verdict map keyed by interface name.
func ifnameSet(t *nftables.Table, name string, isMap bool) *nftables.Set {
	// nft(8) keeps strings in host byte order; the hint makes it print the names.
	s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	if isMap {
		s.IsMap, s.DataType = true, nftables.TypeVerdict
	}
	return s
}

func nfprotoNum(f family) byte {
	if f == fam6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

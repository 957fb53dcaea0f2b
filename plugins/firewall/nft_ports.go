package firewall

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Published ports in nftables: four maps, one element per published port and family,
// and four fixed rules in the hostports chain that look the packet up and DNAT it to
// the element's address and port. Every new connection to a host address costs one map
// lookup whatever the number of published ports, an ADD adds a few netlink messages
// (elements are packed, elemsPerMessage a message) instead of one rule each, and the
// elements carry the same labels as rules do (comment), so the attachment, conflict
// and CHECK logic is the same.
//
//	ports4:    ip daddr . meta l4proto . th dport  ->  ipv4 address . port   (hostIP given)
//	ports4any: meta l4proto . th dport             ->  ipv4 address . port   (every address but 127.0.0.0/8)
//	ports6, ports6any: the same for IPv6 (every address but ::1)

const (
	setPorts4    = "ports4"
	setPorts4Any = "ports4any"
	setPorts6    = "ports6"
	setPorts6Any = "ports6any"
	// elemsPerMessage keeps one NEWSETELEM message under nfnetlink's 64 KiB attribute
	// limit (an element with its label is under 300 bytes).
	elemsPerMessage = 128
	// reg32 is the first 32-bit register (NFT_REG32_00); concatenations use 32-bit
	// registers, one per component, padded.
	reg32 = 8
)

// portMapNames lists the maps in a fixed order.
var portMapNames = []string{setPorts4, setPorts4Any, setPorts6, setPorts6Any}

func portMapName(f family, any bool) string {
	switch {
	case f == fam4 && any:
		return setPorts4Any
	case f == fam4:
		return setPorts4
	case any:
		return setPorts6Any
	}
	return setPorts6
}

// portMaps describes the four maps.
func portMaps(t *nftables.Table) map[string]*nftables.Set {
	out := map[string]*nftables.Set{}
	for _, name := range portMapNames {
		addrType := nftables.TypeIPAddr
		if name == setPorts6 || name == setPorts6Any {
			addrType = nftables.TypeIP6Addr
		}
		key := nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
		if name == setPorts4 || name == setPorts6 {
			key = nftables.MustConcatSetType(addrType, nftables.TypeInetProto, nftables.TypeInetService)
		}
		out[name] = &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: key,
			DataType: nftables.MustConcatSetType(addrType, nftables.TypeInetService)}
	}
	return out
}

// hostportsRules are the fixed rules of the hostports chain.
func hostportsRules() []nftRule {
	var out []nftRule
	for _, f := range []family{fam4, fam6} {
		addrLen, lo := uint32(ip4AddrLen), loopback4
		if f == fam6 {
			addrLen, lo = ip6AddrLen, loopback6
		}
		addrRegs := addrLen / 4
		// hostIP given: daddr . l4proto . dport
		specific := join(nfproto(f), one(daddrLoad(f)),
			one(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32 + addrRegs}),
			one(&expr.Payload{DestRegister: reg32 + addrRegs + 1, Base: expr.PayloadBaseTransportHeader, Offset: thDportOff, Len: thPortLen}),
			mapDNAT(f, portMapName(f, false), addrRegs))
		// every address but loopback: l4proto . dport
		anyAddr := join(nfproto(f), addr(f, false, lo, expr.CmpOpNeq),
			one(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1}),
			one(&expr.Payload{DestRegister: reg32 + 1, Base: expr.PayloadBaseTransportHeader, Offset: thDportOff, Len: thPortLen}),
			mapDNAT(f, portMapName(f, true), addrRegs))
		out = append(out,
			newNFTRule(chainHostports, label{Base: "dnat-" + f.String()}, specific),
			newNFTRule(chainHostports, label{Base: "dnat-" + f.String() + "-any"}, anyAddr))
	}
	return out
}

// mapDNAT looks the key in register 1 up in the map and DNATs to the address and port
// it yields (the port in the 32-bit register after the address).
func mapDNAT(f family, set string, addrRegs uint32) []expr.Any {
	natFam := uint32(nfprotoNum(f))
	return []expr.Any{
		&expr.Lookup{SourceRegister: reg1, SetName: set, DestRegister: reg1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFam, RegAddrMin: reg1, RegProtoMin: reg32 + addrRegs, Specified: true},
	}
}

// portElement is the map element of one published port.
func portElement(k AttachmentKey, r portRule) (string, nftables.SetElement) {
	pad4 := func(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }
	addrBytes := func(ip []byte) []byte { return append([]byte(nil), ip...) }
	target := r.containerIP.To4()
	if r.fam == fam6 {
		target = r.containerIP.To16()
	}
	key := join4(pad4([]byte{r.protoNum}), pad4(binaryutil.BigEndian.PutUint16(r.hostPort)))
	if r.hostIP != nil {
		key = join4(addrBytes(r.hostIP), key)
	}
	val := join4(addrBytes(target), pad4(binaryutil.BigEndian.PutUint16(r.containerPort)))
	l := r.label(k, ruleDNAT)
	l.Sum = contentSum(key, val)
	return portMapName(r.fam, r.hostIP == nil), nftables.SetElement{Key: key, Val: val, Comment: l.String()}
}

func join4(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// portElem is a map element read from the kernel with its label.
type portElem struct {
	set   string
	elem  nftables.SetElement
	label label
}

// readPorts lists the elements of the four maps; missing maps are empty.
func (b *nftBackend) readPorts(c *nftables.Conn, t *nftables.Table) ([]portElem, error) {
	b.wholePortReads++
	return b.readMaps(c, t, portMapNames...)
}

// readMaps lists the labelled elements of the named port maps; missing maps are empty.
func (b *nftBackend) readMaps(c *nftables.Conn, t *nftables.Table, names ...string) ([]portElem, error) {
	var out []portElem
	maps := portMaps(t)
	for _, name := range names {
		elems, err := b.readElements(c, maps[name])
		if err != nil {
			return nil, err
		}
		for _, e := range elems {
			if l, ok := parseLabel(e.Comment); ok {
				out = append(out, portElem{set: name, elem: e, label: l})
			}
		}
	}
	return out, nil
}

func portLabels(ps []portElem) []label {
	out := make([]label, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.label)
	}
	return out
}

// queueElements queues adding (or deleting) elements, per map, elemsPerMessage a message.
func (b *nftBackend) queueElements(c *nftables.Conn, t *nftables.Table, bySet map[string][]nftables.SetElement, del bool) error {
	maps := portMaps(t)
	for _, name := range portMapNames {
		elems := bySet[name]
		for len(elems) > 0 {
			n := min(len(elems), elemsPerMessage)
			var err error
			if del {
				err = c.SetDeleteElements(maps[name], elems[:n])
			} else {
				err = c.SetAddElements(maps[name], elems[:n])
			}
			if err != nil {
				return b.fail("queue elements of "+name, err)
			}
			elems = elems[n:]
		}
	}
	return nil
}

// deleteElements queues the deletion of read elements.
func (b *nftBackend) deleteElements(c *nftables.Conn, t *nftables.Table, ps []portElem) error {
	bySet := map[string][]nftables.SetElement{}
	for _, p := range ps {
		bySet[p.set] = append(bySet[p.set], nftables.SetElement{Key: p.elem.Key})
	}
	return b.queueElements(c, t, bySet, true)
}

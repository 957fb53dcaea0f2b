package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// labelledHandle is a rule known only by its chain, its handle and its moor label.
type labelledHandle struct {
	chain  string
	handle uint64
	label  label
}

// nfgenmsgLen is the nfnetlink header before a message's attributes (family, version,
// resource id); nlaHeaderLen an attribute's (length, type).
const (
	nfgenmsgLen  = 4
	nlaHeaderLen = 4
	nlaTypeMask  = 0x3fff // without the nested and byte-order flags
)

// readLabels dumps a chain's rules (every chain's of the table when chain is "") and
// keeps of each only its chain, handle and moor label, in the kernel's order; with
// mention set, only the rules whose comment contains it are parsed and kept (a container
// ID: the other attachments' rules cost no parsing). A missing table or chain is empty. It is for chains with a rule per attachment (the MAC
// spoof chain): google/nftables decodes every expression of every rule it lists, which at
// 1,000 rules is ~100,000 allocations on each ADD; this decodes two attributes per rule.
// It reads on c's socket.
func (b *nftBackend) readLabels(c *nftables.Conn, t *nftables.Table, chain, mention string) ([]labelledHandle, error) {
	v, ok := rawConns.Load(c)
	if !ok {
		return nil, b.fail("list chain "+chain, errors.New("connection without its socket"))
	}
	nl := v.(*netlink.Conn)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, t.Name)
	if chain != "" {
		ae.String(unix.NFTA_RULE_CHAIN, chain)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, b.fail("list chain "+chain, err)
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	msgs, err := nl.Execute(req)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, b.fail("list chain "+chain, err)
	}
	var out []labelledHandle
	mentioned := []byte(mention)
	for _, m := range msgs {
		if len(m.Data) < nfgenmsgLen {
			continue
		}
		var h labelledHandle
		ok := false
		for attrs := m.Data[nfgenmsgLen:]; len(attrs) >= nlaHeaderLen; {
			n := int(binary.NativeEndian.Uint16(attrs))
			if n < nlaHeaderLen || n > len(attrs) {
				return nil, b.fail("list chain "+chain, fmt.Errorf("decoding a rule: attribute length %d of %d bytes", n, len(attrs)))
			}
			typ, val := binary.NativeEndian.Uint16(attrs[2:])&nlaTypeMask, attrs[nlaHeaderLen:n]
			switch {
			case typ == unix.NFTA_RULE_CHAIN:
				h.chain = string(bytes.TrimRight(val, "\x00"))
			case typ == unix.NFTA_RULE_HANDLE && len(val) == 8:
				h.handle = binary.BigEndian.Uint64(val)
			case typ == unix.NFTA_RULE_USERDATA && (mention == "" || bytes.Contains(val, mentioned)):
				if s, found := userdata.GetString(val, userdata.TypeComment); found {
					h.label, ok = parseLabel(s)
				}
			}
			attrs = attrs[min(len(attrs), (n+3)&^3):]
		}
		if ok {
			out = append(out, h)
		}
	}
	return out, nil
}

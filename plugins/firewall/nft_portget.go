package firewall

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Reading only the port-map elements one attachment can touch. Listing the four maps
// whole costs a kernel dump and a label parse per published port of the host (about
// 200 bytes each): at a thousand containers with a port each that is milliseconds on
// every ADD and DEL, growing with the host. What an ADD or DEL of one attachment needs is
// narrower:
//   - conflicts: a wanted port clashes with an element of the same family, protocol and
//     port in the "any address" map (found by its key) or with one in the map of given
//     host addresses (ports4, ports6: read whole; few hosts publish on chosen addresses);
//   - the attachment's own elements: those of the wanted rules (by key) and those of the
//     ports recorded for it in the firewall state by its previous ADD (by key).
// The state is written before the kernel's batch and forgotten only after the DEL's batch
// committed, so it names every element the attachment can have, unless the process died
// between the two; then one of the recorded elements is missing or not the attachment's,
// and the maps are read whole. A missing record is trusted to mean "no published ports"
// only when the state knows the network (its network file exists); otherwise, and when a
// Repairer runs (it brings the state back, it does not read it), the maps are read whole.

// portScope is what an operation on one attachment reads of the port maps.
type portScope struct {
	full bool       // read the four maps whole
	want []portRule // the ports the attachment is to have
	prev []portRule // the ports its state record names (nil: no record)
	key  AttachmentKey
}

// scopeFor works out the scope of an operation on key from its state record; rec is the
// record (nil when there is none) and known whether the state knows key's network. (A
// Repairer's operations read no record: their scope stays full.)
func scopeFor(key AttachmentKey, want []portRule, rec *Attachment, known bool) portScope {
	s := portScope{key: key, want: want}
	switch {
	case rec == nil && !known:
		s.full = true
	case rec != nil:
		prev, err := planPorts(netPlan{Network: Network{Name: key.Network}}, *rec)
		if err != nil {
			s.full = true // a record this version cannot expand: trust nothing
		}
		s.prev = prev
	}
	return s
}

// readAttachmentPorts returns the elements of the port maps that s needs (see above), as
// readPorts would list them.
func (b *nftBackend) readAttachmentPorts(c *nftables.Conn, t *nftables.Table, s portScope) ([]portElem, error) {
	if s.full {
		return b.readPorts(c, t)
	}
	out, err := b.readMaps(c, t, setPorts4, setPorts6)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, r := range append(append([]portRule(nil), s.want...), s.prev...) {
		anyRule := r
		anyRule.hostIP = nil
		set, e := portElement(s.key, anyRule)
		if seen[set+"\x00"+string(e.Key)] {
			continue
		}
		seen[set+"\x00"+string(e.Key)] = true
		pe, found, err := b.lookupElement(c, t, set, e.Key)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, pe)
		}
	}
	if !recordHolds(out, s.key, s.prev) {
		return b.readPorts(c, t)
	}
	return out, nil
}

// recordHolds reports whether every element the record's rules make is among elems with
// the attachment's label: the kernel is as the record says.
func recordHolds(elems []portElem, key AttachmentKey, prev []portRule) bool {
	have := map[string]bool{}
	for _, pe := range elems {
		have[pe.set+"\x00"+pe.label.String()] = true
	}
	for _, r := range prev {
		set, e := portElement(key, r)
		if !have[set+"\x00"+e.Comment] {
			return false
		}
	}
	return true
}

// lookupElement asks the kernel for the element of key in the map set (one
// NFT_MSG_GETSETELEM that is not a dump: the kernel answers with that element or ENOENT).
// A missing map or element is found false; an element without a moor label is ignored
// as readPorts ignores it.
func (b *nftBackend) lookupElement(c *nftables.Conn, t *nftables.Table, set string, key []byte) (portElem, bool, error) {
	op := "look up an element of " + set
	v, ok := rawConns.Load(c)
	if !ok {
		return portElem{}, false, b.fail(op, errors.New("connection without its socket"))
	}
	nl := v.(*netlink.Conn)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, t.Name)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ne *netlink.AttributeEncoder) error {
		ne.Nested(unix.NFTA_LIST_ELEM, func(le *netlink.AttributeEncoder) error {
			le.Nested(unix.NFTA_SET_ELEM_KEY, func(ke *netlink.AttributeEncoder) error {
				ke.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return portElem{}, false, b.fail(op, err)
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM), Flags: netlink.Request},
		Data:   append([]byte{byte(t.Family), unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	msgs, err := nl.Execute(req)
	if err != nil {
		if isNotFound(err) {
			return portElem{}, false, nil
		}
		return portElem{}, false, b.fail(op, err)
	}
	for _, m := range msgs {
		e, err := decodeElement(m.Data)
		if err != nil {
			return portElem{}, false, b.fail(op, err)
		}
		if l, ok := parseLabel(e.Comment); ok {
			return portElem{set: set, elem: e, label: l}, true, nil
		}
	}
	return portElem{}, false, nil
}

// decodeElement reads the first element of a NEWSETELEM message: its key, value and
// comment.
func decodeElement(data []byte) (nftables.SetElement, error) {
	var e nftables.SetElement
	if len(data) < nfgenmsgLen {
		return e, fmt.Errorf("set element message of %d bytes", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[nfgenmsgLen:])
	if err != nil {
		return e, err
	}
	found := false
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS || found {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() && !found {
				if list.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				found = true
				list.Nested(func(el *netlink.AttributeDecoder) error {
					for el.Next() {
						switch el.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							el.Nested(func(d *netlink.AttributeDecoder) error { e.Key = dataValue(d); return nil })
						case unix.NFTA_SET_ELEM_DATA:
							el.Nested(func(d *netlink.AttributeDecoder) error { e.Val = dataValue(d); return nil })
						case unix.NFTA_SET_ELEM_USERDATA:
							if s, ok := userdata.GetString(el.Bytes(), userdata.TypeComment); ok {
								e.Comment = s
							}
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		return e, err
	}
	return e, nil
}

// dataValue returns the NFTA_DATA_VALUE of a data attribute's nest.
func dataValue(d *netlink.AttributeDecoder) []byte {
	for d.Next() {
		if d.Type() == unix.NFTA_DATA_VALUE {
			return d.Bytes()
		}
	}
	return nil
}

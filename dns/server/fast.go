package server

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"

	"github.com/miekg/dns"
)

// The fast path answers the query every container resolver sends most, an A or AAAA
// question for a name of its networks, straight from the datagram's bytes into a reused
// buffer: no dns.Msg is unpacked or packed and nothing is allocated, so that a busy server
// spends its time in the kernel and the collector has nothing to do. It gives exactly the
// answer the chain would (guard, acl and local: the records of the networks the client
// may see, shuffled; NODATA or NXDOMAIN with the zone's SOA) and counts the query in the
// metrics as the metrics stage does. Everything else, and any datagram it is not sure of,
// goes through Unpack and the chain: other types and opcodes, several questions or records,
// an EDNS record with options, names with bytes outside letters, digits, '-' and '_' (they
// have escaped presentation forms), the apex of a zone, clients of no network, answers
// that would not fit the client's size. It is used only with DefaultChain: a chain without
// one of those stages must not be bypassed.

// Wire-format constants of the fast path.
const (
	qtypeClassLen = 4         // a question's type and class
	optFixedLen   = 11        // an OPT record without options: root name, type, class, TTL, rdlength
	rrFixedLen    = 10        // type, class, TTL, rdlength after an owner name
	namePointer   = 0xc000    // a compression pointer...
	questionOff   = headerLen // ...to the question's name, right after the header
	flagAA        = 0x04      // header byte 2
	flagRD        = 0x01      // header byte 2
	flagRA        = 0x80      // header byte 3
	flagCD        = 0x10      // header byte 3
	opcodeMask    = 0x78      // header byte 2
)

// fastQuery is what the fast path reads from a query.
type fastQuery struct {
	id       uint16
	rd, cd   bool
	qtype    uint16
	question []byte // the question section as sent, echoed in the answer
	edns     bool
	udpSize  uint16 // the client's EDNS size (0 without EDNS)
}

// parseFast reads a query of the common shape: one question of class IN and type A or
// AAAA, no answer or authority records, at most one OPT record without options and
// nothing after it. It writes the lowercase presentation form of the name (with the
// trailing dot, the form of the index's keys) into name, which must have room for
// maxNameLen+1 bytes, and returns its length. ok is false for any other query.
func parseFast(b []byte, name []byte) (q fastQuery, n int, ok bool) {
	if len(b) < headerLen || b[flagsByte]&(responseQR|opcodeMask) != 0 {
		return q, 0, false
	}
	qd, an, ns, ar := be16(b[4:]), be16(b[6:]), be16(b[8:]), be16(b[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return q, 0, false
	}
	off := headerLen
	for {
		if off >= len(b) {
			return q, 0, false
		}
		l := int(b[off])
		off++
		if l == 0 {
			break
		}
		// A pointer or a reserved label type, a label past the datagram or a name too long:
		// the chain decides.
		if l > 63 || off+l > len(b) || n+l+1 > maxNameLen+1 {
			return q, 0, false
		}
		for _, c := range b[off : off+l] {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			default:
				return q, 0, false
			}
			name[n] = c
			n++
		}
		name[n] = '.'
		n++
		off += l
	}
	if n == 0 || off+qtypeClassLen > len(b) {
		return q, 0, false // the root name, or a truncated question
	}
	q.qtype = be16(b[off:])
	if (q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA) || be16(b[off+2:]) != dns.ClassINET {
		return q, 0, false
	}
	off += qtypeClassLen
	q.question = b[headerLen:off]
	if ar == 1 {
		// An OPT record without options: root name, type OPT, the size as class, a TTL
		// (extended rcode, version, flags) and an empty rdata.
		if len(b)-off != optFixedLen || b[off] != 0 || be16(b[off+1:]) != dns.TypeOPT || be16(b[off+9:]) != 0 {
			return q, 0, false
		}
		q.edns = true
		q.udpSize = be16(b[off+3:])
		off += optFixedLen
	}
	if off != len(b) {
		return q, 0, false
	}
	q.id = be16(b)
	q.rd = b[flagsByte]&flagRD != 0
	q.cd = b[flagsByte+1]&flagCD != 0
	return q, n, true
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// fastAnswer writes the answer to q (whose lowercase name is qname) for a client that sees
// views into out and returns it with its rcode; ok is false when the chain must answer.
func fastAnswer(out []byte, q fastQuery, qname []byte, views []*netView, ttl uint32) (ans []byte, rcode int, ok bool) {
	if len(views) == 0 {
		return nil, 0, false // REFUSED: the acl stage says so
	}
	limit := dns.MinMsgSize
	if q.edns {
		limit = min(max(int(q.udpSize), dns.MinMsgSize), maxUDPSize)
	}
	found := false
	var soaZone []byte
	count := 0
	// The entries found, so that writing the answer looks none up again (a lookup hashes
	// the name): the common client sees one network.
	var seen [4]*entry
	for i, v := range views {
		e := v.names.getBytes(qname)
		if i < len(seen) {
			seen[i] = e
		}
		if e != nil {
			found = true
			if q.qtype == dns.TypeA {
				count += len(e.v4)
			} else {
				count += len(e.v6)
			}
		}
	}
	rcode = dns.RcodeSuccess
	switch {
	case found && count == 0: // NODATA
		soaZone = views[0].zoneWire
	case !found:
		for _, v := range views {
			if inZone(string(qname), v.zone) {
				if len(qname) == len(v.zone) {
					return nil, 0, false // the apex: rare, the chain answers it
				}
				rcode = dns.RcodeNameError
				soaZone = v.zoneWire
				break
			}
		}
		if soaZone == nil {
			return nil, 0, false // not ours: forwarded by the chain
		}
	}
	if found && count == 0 && soaZone == nil {
		return nil, 0, false
	}

	rdlen := 4
	if q.qtype == dns.TypeAAAA {
		rdlen = 16
	}
	rrLen := 2 + rrFixedLen + rdlen // a pointer to the question's name, then the record
	size := headerLen + len(q.question) + count*rrLen
	if soaZone != nil {
		size += soaLen(soaZone)
	}
	if q.edns {
		size += optFixedLen
	}
	if size > limit || size > cap(out) {
		return nil, 0, false // the chain truncates
	}
	out = out[:headerLen]
	binary.BigEndian.PutUint16(out[0:], q.id)
	out[2] = responseQR | flagAA
	if q.rd {
		out[2] |= flagRD
	}
	out[3] = flagRA | byte(rcode)
	if q.cd {
		out[3] |= flagCD
	}
	binary.BigEndian.PutUint16(out[4:], 1)
	binary.BigEndian.PutUint16(out[6:], uint16(count))
	ns := 0
	if soaZone != nil {
		ns = 1
	}
	binary.BigEndian.PutUint16(out[8:], uint16(ns))
	ar := 0
	if q.edns {
		ar = 1
	}
	binary.BigEndian.PutUint16(out[10:], uint16(ar))
	out = append(out, q.question...)
	first := len(out)
	for i, v := range views {
		var e *entry
		if i < len(seen) {
			e = seen[i]
		} else {
			e = v.names.getBytes(qname)
		}
		if e == nil {
			continue
		}
		if q.qtype == dns.TypeA {
			for _, ip := range e.v4 {
				out = binary.BigEndian.AppendUint16(out, namePointer|questionOff)
				out = appendRRHeader(out, q.qtype, ttl, len(ip))
				out = append(out, ip[:]...)
			}
			continue
		}
		for _, ip := range e.v6 {
			out = binary.BigEndian.AppendUint16(out, namePointer|questionOff)
			out = appendRRHeader(out, q.qtype, ttl, len(ip))
			out = append(out, ip[:]...)
		}
	}
	if count > 1 { // the chain shuffles its answers: so does this
		rand.Shuffle(count, func(i, j int) {
			a, b := out[first+i*rrLen:first+(i+1)*rrLen], out[first+j*rrLen:first+(j+1)*rrLen]
			var tmp [2 + rrFixedLen + 16]byte
			copy(tmp[:], a)
			copy(a, b)
			copy(b, tmp[:rrLen])
		})
	}
	if soaZone != nil {
		out = appendSOA(out, soaZone, ttl)
	}
	if q.edns {
		out = append(out, 0) // root
		out = binary.BigEndian.AppendUint16(out, dns.TypeOPT)
		out = binary.BigEndian.AppendUint16(out, uint16(limit))
		out = append(out, 0, 0, 0, 0, 0, 0) // extended rcode, version, flags; no options
	}
	return out, rcode, true
}

func appendRRHeader(out []byte, rrtype uint16, ttl uint32, rdlen int) []byte {
	out = binary.BigEndian.AppendUint16(out, rrtype)
	out = binary.BigEndian.AppendUint16(out, dns.ClassINET)
	out = binary.BigEndian.AppendUint32(out, ttl)
	return binary.BigEndian.AppendUint16(out, uint16(rdlen))
}

// The synthesised SOA's name servers and mailbox, as wire-format labels put before the zone.
var (
	soaNSLabel   = []byte{2, 'n', 's'}
	soaMboxLabel = []byte{10, 'h', 'o', 's', 't', 'm', 'a', 's', 't', 'e', 'r'}
)

const soaFixedLen = 5 * 4 // serial, refresh, retry, expire, minimum

func soaLen(zone []byte) int {
	return len(zone) + rrFixedLen + len(soaNSLabel) + len(zone) + len(soaMboxLabel) + len(zone) + soaFixedLen
}

// appendSOA appends the SOA record localStage.soa makes, names uncompressed as the chain
// sends them.
func appendSOA(out, zone []byte, ttl uint32) []byte {
	out = append(out, zone...)
	out = appendRRHeader(out, dns.TypeSOA, ttl, soaLen(zone)-len(zone)-rrFixedLen)
	out = append(append(out, soaNSLabel...), zone...)
	out = append(append(out, soaMboxLabel...), zone...)
	for _, v := range []uint32{1, soaRefresh, soaRetry, soaExpire, ttl} {
		out = binary.BigEndian.AppendUint32(out, v)
	}
	return out
}

// zoneWire returns zone (a lowercase FQDN) in wire format, or nil when it cannot be
// packed; a view without it leaves negative answers to the chain.
func zoneWire(zone string) []byte {
	b := make([]byte, len(zone)+1)
	n, err := dns.PackDomainName(zone, b, 0, nil, false)
	if err != nil {
		return nil
	}
	return b[:n]
}

// fastEligible reports whether the chain is the one the fast path stands in for.
func fastEligible(chain []string) bool { return slices.Equal(chain, DefaultChain) }

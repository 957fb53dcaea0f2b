package server

import (
	"context"
	"math/rand/v2"
	"net"
	"strings"

	"github.com/miekg/dns"
)

// SOA fields of the synthesised zone of each network's domain (sent with NXDOMAIN/NODATA so
// that clients cache the negative answer for no longer than a local TTL).
const (
	soaRefresh = 60
	soaRetry   = 10
	soaExpire  = 600
	soaMbox    = "hostmaster."
	soaNS      = "ns."
)

// localStage answers A, AAAA and PTR from the networks the client may see. Names in a
// network's domain that do not exist get NXDOMAIN and are never forwarded; other misses go on
// to the next stage.
type localStage struct {
	next Handler
	ttl  uint32
}

func (l *localStage) Name() string { return "local" }

func (l *localStage) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	req := requestFrom(ctx)
	q := r.Question[0]
	qname := strings.ToLower(q.Name) // no copy when already lowercase

	if q.Qtype == dns.TypePTR {
		return l.servePTR(ctx, w, r, req, qname)
	}

	var found bool
	var nA, nAAAA int
	for _, v := range req.views {
		if e, _ := v.names.get(qname); e != nil {
			found = true
			nA += len(e.v4)
			nAAAA += len(e.v6)
		}
	}
	if found {
		m := l.reply(r)
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = make([]dns.RR, 0, nA)
			for _, v := range req.views {
				if e, _ := v.names.get(qname); e != nil {
					m.Answer = appendA(m.Answer, q.Name, e.v4, l.ttl)
				}
			}
		case dns.TypeAAAA:
			m.Answer = make([]dns.RR, 0, nAAAA)
			for _, v := range req.views {
				if e, _ := v.names.get(qname); e != nil {
					m.Answer = appendAAAA(m.Answer, q.Name, e.v6, l.ttl)
				}
			}
		}
		if len(m.Answer) > 1 {
			rand.Shuffle(len(m.Answer), func(i, j int) { m.Answer[i], m.Answer[j] = m.Answer[j], m.Answer[i] })
		}
		if len(m.Answer) == 0 { // the name exists without this type: NODATA
			m.Ns = []dns.RR{l.soa(req.views[0].zone)}
		}
		return writeReply(w, req, r, m)
	}
	for _, v := range req.views {
		if inZone(qname, v.zone) {
			m := l.reply(r)
			if qname == v.zone { // the apex exists: NODATA, or the SOA itself
				if q.Qtype == dns.TypeSOA {
					m.Answer = []dns.RR{l.soa(v.zone)}
				} else {
					m.Ns = []dns.RR{l.soa(v.zone)}
				}
				return writeReply(w, req, r, m)
			}
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{l.soa(v.zone)}
			return writeReply(w, req, r, m)
		}
	}
	return NextOrFailure(l.Name(), l.next, ctx, w, r)
}

// servePTR answers reverse lookups of container addresses. An unknown address inside one of
// the client's subnets gets NXDOMAIN (private addresses are not asked upstream).
func (l *localStage) servePTR(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, req *request, qname string) (int, error) {
	for _, v := range req.views {
		if target, ok := v.ptr.get(qname); ok {
			m := l.reply(r)
			m.Answer = []dns.RR{&dns.PTR{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: l.ttl},
				Ptr: target,
			}}
			return writeReply(w, req, r, m)
		}
	}
	if a, ok := parseReverse(qname); ok {
		a = a.Unmap()
		for _, v := range req.views {
			if v.contains(a) {
				m := l.reply(r)
				m.Rcode = dns.RcodeNameError
				m.Ns = []dns.RR{l.soa(v.zone)}
				return writeReply(w, req, r, m)
			}
		}
	}
	return NextOrFailure(l.Name(), l.next, ctx, w, r)
}

func (l *localStage) reply(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = true
	return m
}

func (l *localStage) soa(zone string) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: l.ttl},
		Ns:      soaNS + zone,
		Mbox:    soaMbox + zone,
		Serial:  1,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  l.ttl,
	}
}

func appendA(rrs []dns.RR, name string, ips [][4]byte, ttl uint32) []dns.RR {
	for i := range ips {
		rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IP(ips[i][:])})
	}
	return rrs
}

func appendAAAA(rrs []dns.RR, name string, ips [][16]byte, ttl uint32) []dns.RR {
	for i := range ips {
		rrs = append(rrs, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: net.IP(ips[i][:])})
	}
	return rrs
}

// writeReply sends m, bounded by the client's buffer: 512 bytes over UDP without EDNS, the
// advertised size (at most maxUDPSize) with it; the TC bit is set when records were cut.
// It records the rcode sent in req and returns m's rcode, or NOERROR when that rcode would
// read as "nothing written" (a forwarded SERVFAIL, for example).
func writeReply(w dns.ResponseWriter, req *request, r, m *dns.Msg) (int, error) {
	size := dns.MinMsgSize
	if req.tcp {
		size = dns.MaxMsgSize
	}
	if opt := r.IsEdns0(); opt != nil {
		adv := min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
		if !req.tcp {
			size = adv
		}
		if m.IsEdns0() == nil {
			m.SetEdns0(uint16(adv), false)
		}
	}
	m.Truncate(size)
	req.written = true
	req.rcode = m.Rcode
	rc := m.Rcode
	if !ClientWrite(rc) {
		rc = dns.RcodeSuccess
	}
	return rc, w.WriteMsg(m)
}

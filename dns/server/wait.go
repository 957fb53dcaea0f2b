package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/plugins/codes"
)

// WaitAnswer's pacing.
const (
	waitRetry  = 20 * time.Millisecond  // pause between WaitAnswer attempts
	waitTryMax = 200 * time.Millisecond // one WaitAnswer query's timeout
)

// WaitError reports that a name was not answered in time (see CNICode).
type WaitError struct {
	Addr, Name string
	Last       error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("dns server %s did not answer %q in time: %v", e.Addr, e.Name, e.Last)
}

// Unwrap exposes the last failure.
func (e *WaitError) Unwrap() error { return e.Last }

// CNICode: no answer at all before the deadline is code 11 (try again later); a wrong
// answer or a refusal is "DNS server failure" (107).
func (e *WaitError) CNICode() uint { return timeoutOr(e.Last, codes.DNSServerFailure) }

// WaitAnswer asks addr ("ip" or "ip:port"; port 53 by default) for name's A and AAAA records
// over UDP until one comes back with an address, or timeout passes. The plugin's ADD calls
// it so that the container's first lookup already works. The query's source address must lie
// in the network's subnet: asking from the host to a gateway address uses that address as
// source, which does.
func WaitAnswer(addr, name string, timeout time.Duration) error {
	if _, err := netip.ParseAddr(addr); err == nil {
		addr = net.JoinHostPort(addr, fmt.Sprint(DefaultPort))
	}
	deadline := time.Now().Add(timeout)
	fqdn := dns.Fqdn(name)
	last := errors.New("no attempt made")
	for {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			left := time.Until(deadline)
			if left <= 0 {
				return &WaitError{Addr: addr, Name: name, Last: last}
			}
			c := dns.Client{Net: "udp", Timeout: min(waitTryMax, left)}
			m := new(dns.Msg)
			m.SetQuestion(fqdn, qt)
			resp, _, err := c.Exchange(m, addr)
			switch {
			case err != nil:
				last = err
			case resp.Rcode != dns.RcodeSuccess:
				last = fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
			case len(resp.Answer) == 0:
				last = fmt.Errorf("no %s record", dns.TypeToString[qt])
			default:
				return nil
			}
		}
		if time.Until(deadline) <= waitRetry {
			return &WaitError{Addr: addr, Name: name, Last: last}
		}
		time.Sleep(waitRetry)
	}
}

// NameUnheld reports whether the server behind addr ("ip:port") says that no record holds
// name in zone: an authoritative NXDOMAIN for "name.<zone>." with zone's SOA, which the
// server gives only for a zone it serves (a name outside its zones is forwarded). Any
// other outcome (an answer, NODATA, a refusal, an error, nothing within timeout) is false:
// the name may be held. The plugin's ADD uses it to skip reading every record of a network
// for aliases nobody holds (see aliasesClaimNoOwnName).
func NameUnheld(addr, name, zone string, timeout time.Duration) bool {
	zone = dns.Fqdn(strings.ToLower(zone))
	m := new(dns.Msg)
	m.SetQuestion(strings.ToLower(name)+"."+zone, dns.TypeA)
	c := dns.Client{Net: "udp", Timeout: timeout}
	resp, _, err := c.Exchange(m, addr)
	if err != nil || resp.Rcode != dns.RcodeNameError || !resp.Authoritative || len(resp.Ns) != 1 {
		return false
	}
	soa, ok := resp.Ns[0].(*dns.SOA)
	return ok && strings.EqualFold(soa.Hdr.Name, zone)
}

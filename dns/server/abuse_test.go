package server

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// selectiveUpstream answers every A query with 192.0.2.1, except names starting with
// "slow", which it swallows (a dead upstream for them). held counts the swallowed ones.
type selectiveUpstream struct {
	addr  string
	held  atomic.Int64
	fresh chan struct{} // a swallowed query arrived
}

func startSelectiveUpstream(t *testing.T, ip string) *selectiveUpstream {
	t.Helper()
	u := &selectiveUpstream{fresh: make(chan struct{}, 64)}
	port := freePort(t, ip)
	u.addr = net.JoinHostPort(ip, itoa(port))
	pc, err := net.ListenPacket("udp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if strings.HasPrefix(r.Question[0].Name, "slow") {
			u.held.Add(1)
			u.fresh <- struct{}{}
			return
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")}}
		_ = w.WriteMsg(m)
	})}
	if err := startDNS(srv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

// sendOnly sends a UDP query from src without waiting for the answer (the slow ones never
// get one before the test ends).
func sendOnly(t *testing.T, gw string, port int, src netip.Addr, name string) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(gw), uint16(port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	b, _ := m.Pack()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Forwards are bounded per client and per network, and a query past a bound gets SERVFAIL
// at once, while local names, other clients and other networks are served. The upstream
// holds the "slow" forwards for the whole test, so the slots stay taken.
func TestForwardBoundsPerClientAndNetwork(t *testing.T) {
	up := startSelectiveUpstream(t, "127.0.0.1")
	e := newEnv(t, []records.Network{netA, netB}, func(o *Options) {
		o.Upstreams = []string{up.addr}
		o.ForwardTimeout = guard
		o.MaxForwardsPerClient = 2
		o.MaxForwardsPerNetwork = 3
		o.CacheSize = -1
	})
	e.put(rec("a", "ca", []string{"127.10.0.10"}, "web"))
	clientA2 := netip.MustParseAddr("127.10.0.6")
	hold := func(src netip.Addr, name string) {
		t.Helper()
		sendOnly(t, gwA, e.port, src, name)
		select {
		case <-up.fresh:
		case <-time.After(guard):
			t.Fatalf("%s from %s never reached the upstream", name, src)
		}
	}
	hold(clientA, "slow1.example.test")
	hold(clientA, "slow2.example.test")
	// Client A is at its bound: its next forward fails at once, its local lookups work.
	if m := e.mustQuery("udp", gwA, clientA, "fast.example.test", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("client past its bound: %s %v, want SERVFAIL", dns.RcodeToString[m.Rcode], answers(m))
	}
	if m := e.mustQuery("udp", gwA, clientA, "web", dns.TypeA); !slices.Equal(answers(m), []string{"127.10.0.10"}) {
		t.Fatalf("local lookup while forwards are held: %s %v", dns.RcodeToString[m.Rcode], answers(m))
	}
	// Another client of the same network still forwards, until the network's bound.
	if m := e.mustQuery("udp", gwA, clientA2, "fast.example.test", dns.TypeA); !slices.Equal(answers(m), []string{"192.0.2.1"}) {
		t.Fatalf("other client: %s %v, want a forwarded answer", dns.RcodeToString[m.Rcode], answers(m))
	}
	hold(clientA2, "slow3.example.test")
	if m := e.mustQuery("udp", gwA, clientA2, "fast2.example.test", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("network past its bound: %s %v, want SERVFAIL", dns.RcodeToString[m.Rcode], answers(m))
	}
	// Another network is not affected.
	if m := e.mustQuery("udp", gwB, clientB, "fast.example.test", dns.TypeA); !slices.Equal(answers(m), []string{"192.0.2.1"}) {
		t.Fatalf("other network: %s %v", dns.RcodeToString[m.Rcode], answers(m))
	}
	if n := e.srv.metrics.forwardOverload.Load(); n != 2 {
		t.Fatalf("overload counter = %d, want 2", n)
	}
	if n := up.held.Load(); n != 3 {
		t.Fatalf("upstream holds %d queries, want 3", n)
	}
}

// dialHeld opens a TCP connection to gw from src.
func dialHeld(t *testing.T, gw string, port int, src netip.Addr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: clientTimeout}
	c, err := d.Dial("tcp", net.JoinHostPort(gw, itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// askOn sends one query for name on an open TCP connection and returns the answer, or the
// error that ended the connection.
func askOn(c net.Conn, name string) (*dns.Msg, error) {
	_ = c.SetDeadline(time.Now().Add(guard))
	dc := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if err := dc.WriteMsg(m); err != nil {
		return nil, err
	}
	return dc.ReadMsg()
}

// TCP connections are bounded per client and in all: one past a bound is closed without an
// answer, the held ones and other clients are served, and a closed connection frees its
// slot.
func TestTCPConnectionBounds(t *testing.T) {
	e := newEnv(t, []records.Network{netA, netB}, func(o *Options) {
		o.MaxTCPConnsPerClient = 3
		o.MaxTCPConns = 5
		o.TCPIdleTimeout = time.Minute // held connections must outlive the test
	})
	e.put(rec("a", "ca", []string{"127.10.0.10"}, "web"))
	e.put(rec("b", "cb", []string{"127.20.0.10"}, "db"))
	var held []net.Conn
	for range 3 {
		held = append(held, dialHeld(t, gwA, e.port, clientA))
	}
	refused := func(gw string, src netip.Addr, name, why string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: clientTimeout}
		c, err := d.Dial("tcp", net.JoinHostPort(gw, itoa(e.port)))
		if err != nil {
			return // reset before the handshake was even reported: refused too
		}
		defer c.Close()
		if m, err := askOn(c, name); err == nil {
			t.Fatalf("%s: got an answer %v, want the connection closed", why, answers(m))
		}
	}
	refused(gwA, clientA, "web", "fourth connection of one client")
	// Another client is served over TCP and UDP while A holds its connections.
	if m := e.mustQuery("tcp", gwB, clientB, "db", dns.TypeA); !slices.Equal(answers(m), []string{"127.20.0.10"}) {
		t.Fatalf("other client over TCP: %v", answers(m))
	}
	if m := e.mustQuery("udp", gwA, clientA, "web", dns.TypeA); !slices.Equal(answers(m), []string{"127.10.0.10"}) {
		t.Fatalf("the capped client over UDP: %v", answers(m))
	}
	// The server-wide bound: B holds two more, the sixth connection is refused.
	heldB := []net.Conn{dialHeld(t, gwB, e.port, clientB), dialHeld(t, gwB, e.port, clientB)}
	refused(gwB, clientB, "db", "connection past the server's bound")
	// The held ones are served.
	for i, c := range held {
		if m, err := askOn(c, "web"); err != nil || !slices.Equal(answers(m), []string{"127.10.0.10"}) {
			t.Fatalf("held connection %d of A: %v %v", i, m, err)
		}
	}
	for i, c := range heldB {
		if m, err := askOn(c, "db"); err != nil || !slices.Equal(answers(m), []string{"127.20.0.10"}) {
			t.Fatalf("held connection %d of B: %v %v", i, m, err)
		}
	}
	// Closing one frees its slot.
	_ = held[0].Close()
	deadline := time.Now().Add(guard)
	for {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: clientB.AsSlice()}, Timeout: clientTimeout}
		c, err := d.Dial("tcp", net.JoinHostPort(gwB, itoa(e.port)))
		var m *dns.Msg
		if err == nil {
			m, err = askOn(c, "db")
			_ = c.Close()
		}
		if err == nil && slices.Equal(answers(m), []string{"127.20.0.10"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a slot freed by a close was not given back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.srv.metrics.tcpRefused.Load(); n < 2 {
		t.Fatalf("refused counter = %d, want at least 2", n)
	}
}

// An IPv6 gateway's UDP socket learns the arrival interface too (IPV6_RECVPKTINFO): a query
// over loopback is answered, none is counted as arriving on a wrong interface.
func TestIPv6GatewayIngress(t *testing.T) {
	v6 := testNet("v6", "::1", "::1/128")
	e := newEnv(t, []records.Network{v6}, nil)
	e.put(rec("v6", "c6", []string{"fd00:60::10"}, "six"))
	for _, proto := range protos {
		m := e.mustQuery(proto, "::1", netip.MustParseAddr("::1"), "six", dns.TypeAAAA)
		if !slices.Equal(answers(m), []string{"fd00:60::10"}) {
			t.Fatalf("%s over IPv6: %s %v", proto, dns.RcodeToString[m.Rcode], answers(m))
		}
	}
	if n := e.srv.metrics.wrongInterface.Load(); n != 0 {
		t.Fatalf("wrong-interface drops = %d, want 0", n)
	}
}

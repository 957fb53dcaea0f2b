package server

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// indexServer is a server without sockets whose index holds recs on network a (and b):
// tests and benchmarks drive its handlers directly.
func indexServer(tb testing.TB, recs []records.Record) *Server {
	tb.Helper()
	s, err := New(Options{Upstreams: []string{"192.0.2.53"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	byNet := map[string][]records.Record{}
	for _, r := range recs {
		byNet[r.Network] = append(byNet[r.Network], r)
	}
	snap := emptySnapshot()
	gws := map[string][]netip.Addr{}
	for _, n := range []records.Network{netA, netB} {
		v, g := buildView(n, byNet[n.Name], DefaultDomain)
		snap.nets[n.Name] = v
		gws[n.Name] = g
	}
	snap.index(gws)
	s.snap.Store(snap)
	return s
}

// msgWriter keeps the reply the chain writes.
type msgWriter struct {
	remote net.Addr
	msg    *dns.Msg
}

func (w *msgWriter) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.ParseIP(gwA), Port: 53} }
func (w *msgWriter) RemoteAddr() net.Addr        { return w.remote }
func (w *msgWriter) WriteMsg(m *dns.Msg) error   { w.msg = m; return nil }
func (w *msgWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *msgWriter) Close() error                { return nil }
func (w *msgWriter) TsigStatus() error           { return nil }
func (w *msgWriter) TsigTimersOnly(bool)         {}
func (w *msgWriter) Hijack()                     {}

// fastServe runs the fast path on a packed query from src to gwA: the answer, unpacked, or
// nil when the fast path leaves the query to the chain.
func fastServe(t *testing.T, s *Server, raw []byte, src netip.Addr) *dns.Msg {
	t.Helper()
	name := make([]byte, maxNameLen+1)
	q, n, ok := parseFast(raw, name)
	if !ok {
		return nil
	}
	out := make([]byte, 0, maxUDPSize)
	ans, rcode, ok := fastAnswer(out, q, name[:n], s.snap.Load().scope(netip.MustParseAddr(gwA), src), uint32(s.opts.TTL.Seconds()))
	if !ok {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(ans); err != nil {
		t.Fatalf("the fast path's answer does not unpack: %v\n%x", err, ans)
	}
	if m.Rcode != rcode {
		t.Errorf("fast path reports rcode %d, wrote %d", rcode, m.Rcode)
	}
	return m
}

// chainServe answers raw through the chain, as a UDP query from src to gwA.
func chainServe(t *testing.T, s *Server, raw []byte, src netip.Addr) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		return nil
	}
	w := &msgWriter{remote: &net.UDPAddr{IP: src.AsSlice(), Port: 40000}}
	h := &entryHandler{s: s, gw: netip.MustParseAddr(gwA)}
	h.ServeDNS(w, req)
	if w.msg == nil {
		return nil
	}
	// As the socket would carry it: packed, and unpacked by the client.
	b, err := w.msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return m
}

// sameAnswer compares everything a client reads, answers in any order (both shuffle).
func sameAnswer(a, b *dns.Msg) error {
	if a.MsgHdr != b.MsgHdr {
		return fmt.Errorf("headers differ:\n%+v\n%+v", a.MsgHdr, b.MsgHdr)
	}
	sect := func(rrs []dns.RR) []string {
		var out []string
		for _, rr := range rrs {
			out = append(out, rr.String())
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(a.Question, b.Question) {
		return fmt.Errorf("questions differ: %v / %v", a.Question, b.Question)
	}
	for i, pair := range [][2][]dns.RR{{a.Answer, b.Answer}, {a.Ns, b.Ns}, {a.Extra, b.Extra}} {
		if x, y := sect(pair[0]), sect(pair[1]); !slices.Equal(x, y) {
			return fmt.Errorf("section %d differs:\n%v\n%v", i, x, y)
		}
	}
	return nil
}

func TestFastPathMatchesChain(t *testing.T) {
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("127.10.1.%d", i+1))
	}
	s := indexServer(t, []records.Record{
		rec("a", "c1", []string{"127.10.0.10", "fd00:10::10"}, "web", "pod.ns"),
		rec("a", "c2", []string{"127.10.0.11"}, "db", "svc"),
		rec("a", "c3", []string{"127.10.0.12"}, "svc"),
		rec("a", "c4", []string{"fd00:10::14"}, "v6only"),
		rec("a", "c5", many, "big"),
		rec("b", "c6", []string{"127.20.0.10"}, "other"),
	})
	query := func(name string, qtype uint16, edit ...func(*dns.Msg)) func() []byte {
		return func() []byte {
			m := new(dns.Msg)
			m.SetQuestion(name, qtype)
			m.Id = 0x1234
			for _, e := range edit {
				e(m)
			}
			b, err := m.Pack()
			if err != nil {
				panic(err)
			}
			return b
		}
	}
	edns := func(size uint16) func(*dns.Msg) { return func(m *dns.Msg) { m.SetEdns0(size, false) } }
	tests := []struct {
		name string
		raw  func() []byte
		src  netip.Addr
		fast bool // the fast path answers it (else the chain must)
	}{
		{"A", query("web.", dns.TypeA), clientA, true},
		{"A mixed case", query("WeB.DNS.moor.", dns.TypeA), clientA, true},
		{"A name.network", query("web.a.", dns.TypeA), clientA, true},
		{"A dotted alias", query("pod.ns.dns.moor.", dns.TypeA), clientA, true},
		{"AAAA", query("web.", dns.TypeAAAA), clientA, true},
		{"A two records", query("svc.", dns.TypeA), clientA, true},
		{"NODATA", query("v6only.", dns.TypeA), clientA, true},
		{"NODATA AAAA", query("db.", dns.TypeAAAA), clientA, true},
		{"NXDOMAIN", query("nope.dns.moor.", dns.TypeA), clientA, true},
		{"NXDOMAIN deeper", query("x.web.dns.moor.", dns.TypeAAAA), clientA, true},
		{"EDNS", query("web.", dns.TypeA, edns(4096)), clientA, true},
		{"EDNS small", query("svc.", dns.TypeA, edns(100)), clientA, true},
		{"EDNS DO", query("web.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, true) }), clientA, true},
		{"EDNS NXDOMAIN", query("nope.dns.moor.", dns.TypeA, edns(1232)), clientA, true},
		{"no RD, CD", query("web.", dns.TypeA, func(m *dns.Msg) { m.RecursionDesired = false; m.CheckingDisabled = true }), clientA, true},
		{"other network's name", query("other.", dns.TypeA), clientA, false},
		{"EDNS big answer", query("big.", dns.TypeA, edns(1232)), clientA, true},
		{"too big without EDNS", query("big.", dns.TypeA), clientA, false},
		{"MX", query("web.", dns.TypeMX), clientA, false},
		{"PTR", query("10.0.10.127.in-addr.arpa.", dns.TypePTR), clientA, false},
		{"ANY", query("web.", dns.TypeANY), clientA, false},
		{"apex", query("dns.moor.", dns.TypeA), clientA, false},
		{"root", query(".", dns.TypeA), clientA, false},
		{"escaped byte", query(`we\.b.dns.moor.`, dns.TypeA), clientA, false},
		{"client of no network", query("web.", dns.TypeA), clientNone, false},
		{"EDNS option", query("web.", dns.TypeA, func(m *dns.Msg) {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}), clientA, false},
		{"class CH", query("web.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), clientA, false},
		{"opcode", query("web.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), clientA, false},
		{"two questions", query("web.", dns.TypeA, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), clientA, false},
		{"an answer record", query("web.", dns.TypeA, func(m *dns.Msg) {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "web.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}}
		}), clientA, false},
		{"trailing bytes", func() []byte { return append(query("web.", dns.TypeA)(), 0) }, clientA, false},
		{"cut question", func() []byte { b := query("web.", dns.TypeA)(); return b[:len(b)-2] }, clientA, false},
		{"a response", query("web.", dns.TypeA, func(m *dns.Msg) { m.Response = true }), clientA, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw()
			fast := fastServe(t, s, raw, tc.src)
			if (fast != nil) != tc.fast {
				t.Fatalf("fast path answered: %v, want %v", fast != nil, tc.fast)
			}
			if fast == nil {
				return
			}
			for range 5 { // answers are shuffled: compare a few
				if err := sameAnswer(fast, chainServe(t, s, raw, tc.src)); err != nil {
					t.Fatal(err)
				}
				fast = fastServe(t, s, raw, tc.src)
			}
		})
	}
}

// TestFastPathShuffles checks that a name with several addresses comes in more than one
// order, as the chain's answers do (round robin between containers of one alias).
func TestFastPathShuffles(t *testing.T) {
	s := indexServer(t, []records.Record{
		rec("a", "c1", []string{"127.10.0.21"}, "svc"),
		rec("a", "c2", []string{"127.10.0.22"}, "svc"),
		rec("a", "c3", []string{"127.10.0.23"}, "svc"),
	})
	m := new(dns.Msg)
	m.SetQuestion("svc.", dns.TypeA)
	raw, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	orders := map[string]bool{}
	const queries = 40 // 6 orders: the chance of seeing only one is (1/6)^39
	for range queries {
		a := fastServe(t, s, raw, clientA)
		if a == nil {
			t.Fatal("not answered by the fast path")
		}
		orders[fmt.Sprint(answers(a))] = true
	}
	if len(orders) < 2 {
		t.Fatalf("the order never changed over %d answers: %v", queries, orders)
	}
}

// TestFastPathAllocatesNothing: the common query is answered without a heap allocation,
// so that a busy server leaves the collector nothing to do.
func TestFastPathAllocatesNothing(t *testing.T) {
	s := indexServer(t, []records.Record{rec("a", "c1", []string{"127.10.0.10"}, "web")})
	raws := map[string][]byte{}
	for _, name := range []string{"web.dns.moor.", "nope.dns.moor."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		raw, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		raws[name] = raw
	}
	name := make([]byte, maxNameLen+1)
	out := make([]byte, 0, maxUDPSize)
	gw := netip.MustParseAddr(gwA)
	ttl := uint32(s.opts.TTL.Seconds())
	for qname, raw := range raws {
		allocs := testing.AllocsPerRun(100, func() {
			q, n, ok := parseFast(raw, name)
			if !ok {
				t.Fatal("not parsed")
			}
			if _, _, ok := fastAnswer(out, q, name[:n], s.snap.Load().scope(gw, clientA), ttl); !ok {
				t.Fatal("not answered")
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per query, want 0", qname, allocs)
		}
	}
}

// FuzzFastPath: whatever datagram the fast path answers, the chain answers the same way,
// within the client's size bound; the fast path never answers what the chain would drop.
func FuzzFastPath(f *testing.F) {
	s := fuzzServer(f)
	for _, seed := range packetSeeds() {
		f.Add(seed, byte(0))
	}
	f.Fuzz(func(t *testing.T, packet []byte, client byte) {
		src := fuzzClients[int(client)%len(fuzzClients)]
		if len(packet) < headerLen || isResponse(packet) {
			return // dropped before either path
		}
		fast := fastServe(t, s, packet, src)
		if fast == nil {
			return
		}
		chain := chainServe(t, s, packet, src)
		if chain == nil {
			t.Fatal("the fast path answered a datagram the chain drops")
		}
		if err := sameAnswer(fast, chain); err != nil {
			t.Fatal(err)
		}
		q := new(dns.Msg)
		if err := q.Unpack(packet); err != nil {
			t.Fatal(err)
		}
		if b, err := fast.Pack(); err != nil || len(b) > replyBound(q, false) {
			t.Fatalf("fast answer of %d bytes (%v), bound %d", len(b), err, replyBound(q, false))
		}
	})
}

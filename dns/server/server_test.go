package server

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

const (
	gwA = "127.10.0.1"
	gwB = "127.20.0.1"
)

func TestResolve(t *testing.T) {
	e := newEnv(t, []records.Network{netA, netB}, nil)
	e.put(rec("a", "abcdef1234567890", []string{"127.10.0.10", "fd00:10::10"}, "web", "abcdef123456", "frontend", "pod.ns"))
	e.put(rec("a", "other", []string{"127.10.0.11"}, "db"))

	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string
	}{
		{"name", "web", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"upper case", "WEB", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"alias", "frontend", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"short id", "abcdef123456", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"dotted alias", "pod.ns", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"name.network", "web.a", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"name.domain", "web.dns.moor", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"other record", "db.dns.moor", dns.TypeA, dns.RcodeSuccess, []string{"127.10.0.11"}},
		{"AAAA", "web", dns.TypeAAAA, dns.RcodeSuccess, []string{"fd00:10::10"}},
		{"AAAA nodata", "db", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"MX nodata", "web", dns.TypeMX, dns.RcodeSuccess, nil},
		{"PTR v4", "10.0.10.127.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"web.dns.moor."}},
		{"PTR v6", mustReverse("fd00:10::10"), dns.TypePTR, dns.RcodeSuccess, []string{"web.dns.moor."}},
		{"PTR unknown in subnet", "99.0.10.127.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, nil},
		{"NXDOMAIN in domain", "nope.dns.moor", dns.TypeA, dns.RcodeNameError, nil},
		{"NXDOMAIN deeper in domain", "x.web.dns.moor", dns.TypeA, dns.RcodeNameError, nil},
	}
	for _, proto := range protos {
		for _, tc := range tests {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				m := e.mustQuery(proto, gwA, clientA, tc.qname, tc.qtype)
				if m.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s\n%v", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode], m)
				}
				if got := answers(m); !slices.Equal(got, tc.want) {
					t.Fatalf("answers %v, want %v", got, tc.want)
				}
				if !m.Authoritative {
					t.Error("local answer not authoritative")
				}
				for _, rr := range m.Answer {
					if rr.Header().Ttl != uint32(DefaultTTL.Seconds()) {
						t.Errorf("TTL %d, want %v", rr.Header().Ttl, DefaultTTL)
					}
				}
				if tc.rcode == dns.RcodeNameError && (len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA) {
					t.Errorf("NXDOMAIN without SOA: %v", m.Ns)
				}
			})
		}
	}
}

func mustReverse(ip string) string {
	r, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return r
}

func TestRoundRobinAlias(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	want := []string{"127.10.0.21", "127.10.0.22", "127.10.0.23"}
	for i, ip := range want {
		e.put(rec("a", fmt.Sprintf("c%d", i), []string{ip}, fmt.Sprintf("n%d", i), "svc"))
	}
	for _, proto := range protos {
		t.Run(proto, func(t *testing.T) {
			orders := map[string]bool{}
			const queries = 40 // 6 orders: the chance of seeing only one is (1/6)^39
			for range queries {
				got := answers(e.mustQuery(proto, gwA, clientA, "svc", dns.TypeA))
				sorted := slices.Sorted(slices.Values(got))
				if !slices.Equal(sorted, want) {
					t.Fatalf("answers %v, want all of %v", got, want)
				}
				orders[strings.Join(got, ",")] = true
			}
			if len(orders) < 2 {
				t.Fatalf("the order never changed over %d answers: %v", queries, orders)
			}
		})
	}
}

func TestScoping(t *testing.T) {
	shared1 := testNet("c", "127.0.0.1", "127.40.0.0/16")
	shared2 := testNet("d", "127.0.0.1", "127.50.0.0/16")
	e := newEnv(t, []records.Network{netA, netB, shared1, shared2}, nil)
	e.put(rec("a", "ca", []string{"127.10.0.10"}, "web"))
	e.put(rec("b", "cb", []string{"127.20.0.10"}, "only-b"))
	e.put(rec("c", "cc", []string{"127.40.0.10"}, "web"))
	e.put(rec("d", "cd", []string{"127.50.0.10"}, "web"))

	tests := []struct {
		name  string
		gw    string
		src   netip.Addr
		qname string
		rcode int
		want  []string
	}{
		{"A sees its own", gwA, clientA, "web", dns.RcodeSuccess, []string{"127.10.0.10"}},
		{"B cannot see A's name", gwB, clientB, "web.dns.moor", dns.RcodeNameError, nil},
		{"B sees its own", gwB, clientB, "only-b", dns.RcodeSuccess, []string{"127.20.0.10"}},
		{"A cannot see B's name", gwA, clientA, "only-b.dns.moor", dns.RcodeNameError, nil},
		{"B client on A's gateway", gwA, clientB, "web", dns.RcodeRefused, nil},
		{"outsider on A", gwA, clientNone, "web", dns.RcodeRefused, nil},
		{"outsider on B", gwB, clientNone, "only-b", dns.RcodeRefused, nil},
		{"shared gateway, network c", "127.0.0.1", netip.MustParseAddr("127.40.0.5"), "web", dns.RcodeSuccess, []string{"127.40.0.10"}},
		{"shared gateway, network d", "127.0.0.1", netip.MustParseAddr("127.50.0.5"), "web", dns.RcodeSuccess, []string{"127.50.0.10"}},
		{"shared gateway, outsider", "127.0.0.1", clientNone, "web", dns.RcodeRefused, nil},
	}
	for _, proto := range protos {
		for _, tc := range tests {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				m := e.mustQuery(proto, tc.gw, tc.src, tc.qname, dns.TypeA)
				if m.Rcode != tc.rcode || !slices.Equal(answers(m), tc.want) {
					t.Fatalf("got %s %v, want %s %v", dns.RcodeToString[m.Rcode], answers(m), dns.RcodeToString[tc.rcode], tc.want)
				}
			})
		}
	}
}

func TestNoWildcardBind(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	// Another loopback address on the same port is not ours: binding it must still work.
	hp := net.JoinHostPort("127.10.0.2", itoa(e.port))
	pc, err := net.ListenPacket("udp", hp)
	if err != nil {
		t.Fatalf("port %d is taken on another address: the server bound more than its gateway: %v", e.port, err)
	}
	_ = pc.Close()
	if got := e.srv.Addrs(); !slices.Equal(got, []string{net.JoinHostPort(gwA, itoa(e.port))}) {
		t.Fatalf("Addrs() = %v", got)
	}
}

func TestGuard(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	e.put(rec("a", "ca", []string{"127.10.0.10"}, "web"))
	for _, proto := range protos {
		t.Run(proto, func(t *testing.T) {
			for _, qt := range []uint16{dns.TypeANY, dns.TypeAXFR} {
				if proto == "udp" && qt == dns.TypeAXFR {
					continue
				}
				m := e.mustQuery(proto, gwA, clientA, "web", qt)
				if m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
					t.Fatalf("%s: rcode %s with %d answers, want REFUSED and none", dns.TypeToString[qt], dns.RcodeToString[m.Rcode], len(m.Answer))
				}
			}
			m, err := queryAt(proto, net.JoinHostPort(gwA, itoa(e.port)), clientA, "web", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })
			if err != nil || m.Rcode != dns.RcodeRefused {
				t.Fatalf("CHAOS class: %v %v, want REFUSED", m, err)
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	const n = 60 // 60 A records do not fit 512 bytes
	for i := range n {
		r := rec("a", fmt.Sprintf("c%02d", i), []string{fmt.Sprintf("127.10.1.%d", i+1)}, fmt.Sprintf("n%02d", i), "big")
		if err := e.store.Put(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	e.sync()
	addr := net.JoinHostPort(gwA, itoa(e.port))
	m, err := queryAt("udp", addr, clientA, "big", dns.TypeA, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Compress = true // the size on the wire
	if !m.Truncated || m.Len() > dns.MinMsgSize || len(m.Answer) >= n {
		t.Fatalf("UDP without EDNS: TC=%v, %d bytes, %d answers; want TC, <= 512 bytes", m.Truncated, m.Len(), len(m.Answer))
	}
	m, err = queryAt("udp", addr, clientA, "big", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(maxUDPSize, false) })
	if err != nil {
		t.Fatal(err)
	}
	if m.Truncated || len(m.Answer) != n || m.IsEdns0() == nil {
		t.Fatalf("UDP with EDNS %d: TC=%v, %d answers, OPT %v; want all %d, no TC", maxUDPSize, m.Truncated, len(m.Answer), m.IsEdns0(), n)
	}
	m, err = queryAt("tcp", addr, clientA, "big", dns.TypeA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Truncated || len(m.Answer) != n {
		t.Fatalf("TCP: TC=%v, %d answers, want all %d", m.Truncated, len(m.Answer), n)
	}
}

// The index holds at most records.MaxNamesPerNetwork names per network, whatever the store
// holds: records past the bound are left out (whole) and counted.
func TestIndexNameBound(t *testing.T) {
	per := records.MaxNamesPerRecord
	n := records.MaxNamesPerNetwork/per + 2
	recs := make([]records.Record, 0, n)
	for i := range n {
		names := make([]string, per)
		for j := range names {
			names[j] = fmt.Sprintf("r%d-n%d", i, j)
		}
		recs = append(recs, rec("a", fmt.Sprintf("id%05d", i), []string{"127.10.0.10"}, names...))
	}
	v, _ := buildView(netA, recs, DefaultDomain)
	if v.nameCount != records.MaxNamesPerNetwork || v.skipped != 2 {
		t.Fatalf("indexed %d names, skipped %d records; want %d and 2", v.nameCount, v.skipped, records.MaxNamesPerNetwork)
	}
	if first, _ := v.names.get("r0-n0."); first == nil {
		t.Fatal("the first record must be indexed")
	}
	if last, _ := v.names.get(fmt.Sprintf("r%d-n0.", n-1)); last != nil {
		t.Fatal("the last record must be left out")
	}
}

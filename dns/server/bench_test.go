package server

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

const benchNames = 1000

// benchServer is a server whose index holds benchNames records on network a, without
// sockets: the benchmarks drive the handler directly.
func benchServer(b *testing.B) *Server {
	b.Helper()
	return indexServer(b, benchRecords(benchNames))
}

// benchRecords returns n records of network a, one name each ("ctr-00042").
func benchRecords(n int) []records.Record {
	recs := make([]records.Record, 0, n)
	for i := range n {
		recs = append(recs, rec("a", fmt.Sprintf("id%05d", i), []string{fmt.Sprintf("127.10.%d.%d", i/250, i%250+1)}, fmt.Sprintf("ctr-%05d", i)))
	}
	return recs
}

// benchQueries returns A queries for the names of benchRecords(n), 80 % hits and 20 %
// in-domain misses (the dnsperf mix of the perf baseline).
func benchQueries(n int) []*dns.Msg {
	const mix = 10
	qs := make([]*dns.Msg, 0, n)
	for i := range n {
		name := fmt.Sprintf("ctr-%05d.dns.moor.", i)
		if i%mix >= 8 {
			name = fmt.Sprintf("miss-%05d.dns.moor.", i)
		}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		qs = append(qs, m)
	}
	return qs
}

// benchWriter packs the reply as a socket would and throws it away.
type benchWriter struct {
	remote net.Addr
	local  net.Addr
	buf    []byte
}

func (w *benchWriter) LocalAddr() net.Addr  { return w.local }
func (w *benchWriter) RemoteAddr() net.Addr { return w.remote }
func (w *benchWriter) WriteMsg(m *dns.Msg) error {
	var err error
	w.buf, err = m.PackBuffer(w.buf[:cap(w.buf)])
	return err
}
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) Close() error                { return nil }
func (w *benchWriter) TsigStatus() error           { return nil }
func (w *benchWriter) TsigTimersOnly(bool)         {}
func (w *benchWriter) Hijack()                     {}

// BenchmarkHandler1000Names measures the whole chain for 80 % hits and 20 % in-domain misses
// (the dnsperf mix of the perf baseline) over 1000 names.
func BenchmarkHandler1000Names(b *testing.B) {
	s := benchServer(b)
	h := &entryHandler{s: s, gw: netip.MustParseAddr("127.10.0.1")}
	qs := benchQueries(benchNames)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &benchWriter{remote: &net.UDPAddr{IP: net.ParseIP("127.10.0.5"), Port: 40000}, local: &net.UDPAddr{IP: net.ParseIP("127.10.0.1"), Port: 53}, buf: make([]byte, 0, 512)}
		i := 0
		for pb.Next() {
			h.ServeDNS(w, qs[i%len(qs)])
			i++
		}
	})
}

// BenchmarkRecordChange measures what the sidecar does to its index for one ADD
// (withRecord) and one DEL (withoutRecord) of a record on a network of n records.
func BenchmarkRecordChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		recs := make([]records.Record, 0, n)
		for i := range n {
			recs = append(recs, rec("a", fmt.Sprintf("id%05d", i), []string{fmt.Sprintf("127.10.%d.%d", i/250, i%250+1)}, fmt.Sprintf("ctr-%05d", i), fmt.Sprintf("%012x", i)))
		}
		v, _ := buildView(netA, recs, DefaultDomain)
		extra := rec("a", "new", []string{"127.200.0.1"}, "new-ctr", "0123456789ab")
		b.Run(fmt.Sprintf("add/%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, ok := v.withRecord(extra); !ok {
					b.Fatal("refused")
				}
			}
		})
		b.Run(fmt.Sprintf("del/%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, ok := v.withoutRecord("id00500", "eth0"); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}

// BenchmarkFastPath measures the UDP fast path (parse, look up, answer) for 80 % hits and
// 20 % in-domain misses over networks of 1,000 and 10,000 names.
func BenchmarkFastPath(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := indexServer(b, benchRecords(n))
			views := s.snap.Load().scope(netip.MustParseAddr(gwA), clientA)
			qs := make([][]byte, 0, n)
			for _, m := range benchQueries(n) {
				raw, err := m.Pack()
				if err != nil {
					b.Fatal(err)
				}
				qs = append(qs, raw)
			}
			name := make([]byte, maxNameLen+1)
			out := make([]byte, 0, maxUDPSize)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				q, l, ok := parseFast(qs[i%len(qs)], name)
				if !ok {
					b.Fatal("not parsed")
				}
				if _, _, ok := fastAnswer(out, q, name[:l], views, 5); !ok {
					b.Fatal("not answered")
				}
				i++
			}
		})
	}
}

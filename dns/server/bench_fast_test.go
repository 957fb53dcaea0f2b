package server

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// BenchmarkFastPath measures the UDP fast path (parse, look up, answer) for 80 % hits and
// 20 % in-domain misses over networks of 1,000 and 10,000 names.
func BenchmarkFastPath(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			recs := make([]records.Record, 0, n)
			for i := range n {
				recs = append(recs, rec("a", fmt.Sprintf("id%05d", i), []string{fmt.Sprintf("127.10.%d.%d", i/250, i%250+1)}, fmt.Sprintf("ctr-%05d", i)))
			}
			s := indexServer(b, recs)
			views := s.snap.Load().scope(netip.MustParseAddr(gwA), clientA)
			const mix = 10
			qs := make([][]byte, 0, n)
			for i := range n {
				name := fmt.Sprintf("ctr-%05d.dns.moor.", i)
				if i%mix >= 8 {
					name = fmt.Sprintf("miss-%05d.dns.moor.", i)
				}
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
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

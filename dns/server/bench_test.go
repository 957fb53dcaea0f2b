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
	recs := make([]records.Record, 0, benchNames)
	for i := range benchNames {
		recs = append(recs, rec("a", fmt.Sprintf("id%04d", i), []string{fmt.Sprintf("127.10.%d.%d", i/250, i%250+1)}, fmt.Sprintf("ctr-%04d", i)))
	}
	return indexServer(b, recs)
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
	const mix = 10
	qs := make([]*dns.Msg, 0, benchNames)
	for i := range benchNames {
		name := fmt.Sprintf("ctr-%04d.dns.moor.", i)
		if i%mix >= 8 {
			name = fmt.Sprintf("miss-%04d.dns.moor.", i)
		}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		qs = append(qs, m)
	}
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

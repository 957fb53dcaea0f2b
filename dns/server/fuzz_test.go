package server

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// Fuzzing the DNS message path: raw bytes as they arrive on a gateway's UDP socket (or a
// TCP frame) go through the same steps as udpServer.read (header length, QR bit, Unpack)
// into the entry handler and the whole DefaultChain, with forwards to a local upstream
// that answers everything with an oversized reply. The properties: no panic, garbage and
// answers get no reply, every query gets exactly one reply bounded by 512 bytes (or the
// client's EDNS size, at most 1232; 64 KiB over TCP) whatever the records or the upstream
// hold, ANY is refused, and a client outside every network learns nothing.
// TestRawPacketsOnTheWire sends the seed corpus to a real listener.

// fuzzBigRRs is how many A records the "big" name and the upstream's answers carry: far
// more than 512 or 1232 bytes hold.
const fuzzBigRRs = 120

// fuzzClients are the source addresses a fuzzed query may come from: inside network a,
// inside network b, and outside both.
var fuzzClients = []netip.Addr{clientA, clientB, clientNone}

// fuzzServer is a server with networks a and b and their records in its index, no
// sockets, and a local upstream; the fuzz target drives its entry handler directly.
func fuzzServer(tb testing.TB) *Server {
	tb.Helper()
	up := bigUpstream(tb)
	s, err := New(Options{Upstreams: []string{up}, ForwardTimeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	var recsA []records.Record
	recsA = append(recsA, rec("a", "abcdef1234567890", []string{"127.10.0.10", "fd00:10::10"}, "web", "abcdef123456", "pod.ns"))
	for i := range fuzzBigRRs {
		recsA = append(recsA, rec("a", fmt.Sprintf("big%03d", i), []string{fmt.Sprintf("127.10.1.%d", i+1)}, "big"))
	}
	va, gwsA := buildView(netA, recsA, DefaultDomain)
	vb, gwsB := buildView(netB, []records.Record{rec("b", "cb", []string{"127.20.0.10"}, "db")}, DefaultDomain)
	snap := emptySnapshot()
	snap.nets["a"], snap.nets["b"] = va, vb
	snap.index(map[string][]netip.Addr{"a": gwsA, "b": gwsB})
	s.snap.Store(snap)
	s.refreshUpstreams()
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// bigUpstream answers every query with fuzzBigRRs A records (an amplification attempt
// from upstream); it returns its address.
func bigUpstream(tb testing.TB) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range fuzzBigRRs {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(192, 0, 2, byte(i))})
		}
		_ = w.WriteMsg(m)
	})}
	if err := startDNS(srv); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// replyRecorder is the ResponseWriter of one fuzzed query: it packs what the server
// writes, as the socket would, and keeps the bytes.
type replyRecorder struct {
	remote netip.AddrPort
	tcp    bool
	wire   [][]byte
}

func (w *replyRecorder) remoteAddrPort() netip.AddrPort { return w.remote }
func (w *replyRecorder) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.ParseIP(gwA), Port: DefaultPort}
}
func (w *replyRecorder) RemoteAddr() net.Addr {
	if w.tcp {
		return net.TCPAddrFromAddrPort(w.remote)
	}
	return net.UDPAddrFromAddrPort(w.remote)
}
func (w *replyRecorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	w.wire = append(w.wire, b)
	return nil
}
func (w *replyRecorder) Write(b []byte) (int, error) {
	w.wire = append(w.wire, append([]byte(nil), b...))
	return len(b), nil
}
func (w *replyRecorder) Close() error        { return nil }
func (w *replyRecorder) TsigStatus() error   { return nil }
func (w *replyRecorder) TsigTimersOnly(bool) {}
func (w *replyRecorder) Hijack()             {}

// replyBound is the largest reply a query may get: 512 bytes, or its EDNS size within
// [512, maxUDPSize], over UDP; a TCP frame over TCP.
func replyBound(q *dns.Msg, tcp bool) int {
	if tcp {
		return dns.MaxMsgSize
	}
	if opt := q.IsEdns0(); opt != nil {
		return min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
	}
	return dns.MinMsgSize
}

func FuzzServePacket(f *testing.F) {
	s := fuzzServer(f)
	for _, seed := range packetSeeds() {
		f.Add(seed, byte(0), false)
	}
	f.Fuzz(func(t *testing.T, packet []byte, client byte, tcp bool) {
		src := fuzzClients[int(client)%len(fuzzClients)]
		gw := netip.MustParseAddr(gwA)
		if src == clientB {
			gw = netip.MustParseAddr("127.20.0.1")
		}
		w := &replyRecorder{remote: netip.AddrPortFrom(src, 40000), tcp: tcp}
		// The steps of udpServer.serve before the chain (FuzzFastPath checks that the fast
		// path, which answers some queries before the chain, answers as the chain does).
		if len(packet) < headerLen || isResponse(packet) {
			return
		}
		q := new(dns.Msg)
		if err := q.Unpack(packet); err != nil {
			return
		}
		(&entryHandler{s: s, gw: gw, tcp: tcp}).ServeDNS(w, q)
		if len(w.wire) != 1 {
			t.Fatalf("%d replies to one query, want exactly 1", len(w.wire))
		}
		if n, bound := len(w.wire[0]), replyBound(q, tcp); n > bound {
			t.Fatalf("a %d-byte query got a %d-byte reply, bound %d", len(packet), n, bound)
		}
		r := new(dns.Msg)
		if err := r.Unpack(w.wire[0]); err != nil && !r.Truncated {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if r.Id != q.Id || !r.Response {
			t.Fatalf("reply id %d response %v to query id %d", r.Id, r.Response, q.Id)
		}
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeANY && r.Rcode != dns.RcodeRefused && r.Rcode != dns.RcodeFormatError && r.Rcode != dns.RcodeNotImplemented {
			t.Fatalf("ANY answered with rcode %s", dns.RcodeToString[r.Rcode])
		}
		if src == clientNone && (len(r.Answer) > 0 || r.Rcode == dns.RcodeSuccess) {
			t.Fatalf("a client outside every network got rcode %s and %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	})
}

// packetSeeds are hand-made hostile packets (also written to testdata/fuzz): valid
// queries, truncated ones, compression loops, lying counts, ANY, EDNS sizes, and a
// 64 KiB datagram.
func packetSeeds() [][]byte {
	query := func(name string, qtype uint16, edit func(*dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		if edit != nil {
			edit(m)
		}
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		return b
	}
	web := query("web.", dns.TypeA, nil)
	header := web[:headerLen]
	seeds := [][]byte{
		web,
		query("big.dns.moor.", dns.TypeA, nil),
		query("big.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(4096, true) }),
		query("big.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(100, false) }),
		query("example.org.", dns.TypeA, nil),
		query("example.org.", dns.TypeTXT, func(m *dns.Msg) { m.SetEdns0(1232, false) }),
		query("web.", dns.TypeANY, nil),
		query("10.0.10.127.in-addr.arpa.", dns.TypePTR, nil),
		query("web.", dns.TypeAXFR, nil),
		query("web.", dns.TypeA, func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }),
		query("web.", dns.TypeA, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }),
		query("web.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }),
		web[:len(web)-3], // truncated question
		header,           // a header announcing a question that is not there
		// A question name that is a compression pointer to itself (offset 12).
		append(append([]byte(nil), header...), 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01),
		// Two pointers pointing at each other.
		append(append([]byte(nil), header...), 0xc0, 0x0e, 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01),
		// Counts that claim 65535 records of every section.
		append(append([]byte(nil), web[:4]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		make([]byte, 1<<16-1), // an oversized datagram of zeros
	}
	resp := append([]byte(nil), web...)
	resp[flagsByte] |= responseQR // an answer: never answered (no reflection loops)
	return append(seeds, resp)
}

// TestRawPacketsOnTheWire sends every seed and every file of the fuzz corpus to a real
// gateway listener over UDP and TCP, from inside the network, and checks that whatever
// comes back is bounded and that the server still answers afterwards.
func TestRawPacketsOnTheWire(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	e.put(rec("a", "ca", []string{"127.10.0.10"}, "web"))
	packets := packetSeeds()
	corpus, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzServePacket", "*"))
	for _, path := range corpus {
		if p, ok := corpusPacket(t, path); ok {
			packets = append(packets, p)
		}
	}
	addr := net.JoinHostPort(gwA, itoa(e.port))
	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: clientA.AsSlice()}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	buf := make([]byte, 1<<16)
	for i, p := range packets {
		if len(p) > maxUDPDatagram {
			p = p[:maxUDPDatagram]
		}
		if _, err := udp.Write(p); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		// Whatever answers arrive (none for garbage) must be bounded; a short read
		// deadline only ends the wait for a reply that is not coming.
		_ = udp.SetReadDeadline(time.Now().Add(garbageWait))
		for {
			n, err := udp.Read(buf)
			if err != nil {
				break
			}
			if n > maxUDPSize {
				t.Errorf("packet %d (%d bytes): a %d-byte UDP reply", i, len(p), n)
			}
		}
		if m, err := queryAt("udp", addr, clientA, "web", dns.TypeA, nil); err != nil || len(m.Answer) != 1 {
			t.Fatalf("after packet %d the server no longer answers over UDP: %v %v", i, m, err)
		}
	}
	// The same bytes as TCP frames, each on its own connection.
	for i, p := range packets {
		if len(p) > dns.MaxMsgSize {
			p = p[:dns.MaxMsgSize]
		}
		c, err := net.DialTCP("tcp", &net.TCPAddr{IP: clientA.AsSlice()}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			t.Fatal(err)
		}
		frame := append([]byte{byte(len(p) >> 8), byte(len(p))}, p...)
		_, _ = c.Write(frame)
		_ = c.SetReadDeadline(time.Now().Add(2 * garbageWait))
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
		if m, err := queryAt("tcp", addr, clientA, "web", dns.TypeA, nil); err != nil || len(m.Answer) != 1 {
			t.Fatalf("after TCP frame %d the server no longer answers over TCP: %v %v", i, m, err)
		}
	}
}

// maxUDPDatagram is the largest UDP payload over IPv4.
const maxUDPDatagram = 65507

// garbageWait is how long TestRawPacketsOnTheWire waits for a reply that garbage should
// not get; it bounds the wait, it asserts nothing.
const garbageWait = 20 * time.Millisecond

// The fuzz target's upstream and "big" name really are amplification attempts: the
// replies come cut to the bound with TC set, not dropped, so the target's size check
// bites. (Without EDNS, the upstream's oversized UDP reply cannot even be read: SERVFAIL.)
func TestOversizedAnswersAreCut(t *testing.T) {
	s := fuzzServer(t)
	for _, tc := range []struct {
		name  string
		edns  uint16
		bound int
	}{{"big.", 0, dns.MinMsgSize}, {"big.", 4096, maxUDPSize}, {"example.org.", 4096, maxUDPSize}} {
		q := new(dns.Msg)
		q.SetQuestion(tc.name, dns.TypeA)
		if tc.edns > 0 {
			q.SetEdns0(tc.edns, false)
		}
		w := &replyRecorder{remote: netip.AddrPortFrom(clientA, 40000)}
		(&entryHandler{s: s, gw: netip.MustParseAddr(gwA)}).ServeDNS(w, q)
		r := new(dns.Msg)
		if len(w.wire) != 1 || r.Unpack(w.wire[0]) != nil {
			t.Fatalf("%s: replies %d", tc.name, len(w.wire))
		}
		if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= fuzzBigRRs || len(w.wire[0]) > tc.bound {
			t.Fatalf("%s EDNS %d: TC=%v, %d answers, %d bytes; want TC, some answers, <= %d bytes", tc.name, tc.edns, r.Truncated, len(r.Answer), len(w.wire[0]), tc.bound)
		}
	}
}

// corpusPacket reads the []byte argument of a fuzz corpus file.
func corpusPacket(t *testing.T, path string) ([]byte, bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := parseCorpusFile(data)
	if err != nil || len(vals) == 0 {
		return nil, false
	}
	return vals[0], true
}

// parseCorpusFile returns the []byte values of a "go test fuzz v1" file, in order.
func parseCorpusFile(data []byte) ([][]byte, error) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) == 0 || lines[0] != "go test fuzz v1" {
		return nil, fmt.Errorf("not a fuzz corpus file")
	}
	var out [][]byte
	for _, l := range lines[1:] {
		lit, ok := strings.CutPrefix(l, "[]byte(")
		if !ok {
			continue
		}
		s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
		if err != nil {
			return nil, err
		}
		out = append(out, []byte(s))
	}
	return out, nil
}

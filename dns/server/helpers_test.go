package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// Test networks live on loopback: Linux lets a socket bind any 127/8 address, so a client
// can pick its source address and with it the network it belongs to.
var (
	netA = testNet("a", "127.10.0.1", "127.10.0.0/16")
	netB = testNet("b", "127.20.0.1", "127.20.0.0/16")

	clientA    = netip.MustParseAddr("127.10.0.5")
	clientB    = netip.MustParseAddr("127.20.0.5")
	clientNone = netip.MustParseAddr("127.30.0.9")
)

const clientTimeout = time.Second

var protos = []string{"udp", "tcp"}

func testNet(name, gw, subnet string) records.Network {
	_, sn, err := net.ParseCIDR(subnet)
	if err != nil {
		panic(err)
	}
	return records.Network{Name: name, Gateways: []net.IP{net.ParseIP(gw)}, Subnets: []*net.IPNet{sn}}
}

func rec(network, id string, ips []string, names ...string) records.Record {
	r := records.Record{Network: network, ContainerID: id, IfName: "eth0", Names: names}
	for _, ip := range ips {
		r.IPs = append(r.IPs, net.ParseIP(ip))
	}
	return r
}

// freePort returns a port that is free for UDP and TCP on every address given.
func freePort(t *testing.T, addrs ...string) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(addrs[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		_ = pc.Close()
		ok := true
		for _, a := range addrs {
			hp := net.JoinHostPort(a, itoa(port))
			u, err1 := net.ListenPacket("udp", hp)
			l, err2 := net.Listen("tcp", hp)
			if u != nil {
				_ = u.Close()
			}
			if l != nil {
				_ = l.Close()
			}
			if err1 != nil || err2 != nil {
				ok = false
			}
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func itoa(i int) string { return strconv.Itoa(i) }

// env is a running server on a fresh store.
type env struct {
	t     *testing.T
	store *records.Local
	srv   *Server
	port  int
	sock  string
}

// newEnv starts a server on a fresh Local store holding nets. mod adjusts the options.
func newEnv(t *testing.T, nets []records.Network, mod func(*Options)) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: binds port numbers and addresses on loopback like the real server")
	}
	dir := t.TempDir()
	st, err := records.NewLocal(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		if err := st.PutNetwork(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	var gws []string
	for _, n := range nets {
		for _, g := range n.Gateways {
			gws = append(gws, g.String())
		}
	}
	e := &env{t: t, store: st, port: freePort(t, gws...), sock: filepath.Join(dir, "dns.sock")}
	e.start(mod)
	return e
}

func (e *env) start(mod func(*Options)) {
	e.t.Helper()
	resolv := filepath.Join(e.t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, nil, 0o600); err != nil { // no upstreams unless a test sets some
		e.t.Fatal(err)
	}
	opts := Options{
		Store:          e.store,
		Port:           e.port,
		ResolvConf:     resolv,
		ControlSocket:  e.sock,
		IdleTimeout:    -1,
		KeepPrivileges: true,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		cancel()
		e.t.Fatal(err)
	}
	e.srv = srv
	e.t.Cleanup(func() {
		cancel()
		_ = srv.Close()
	})
}

func (e *env) put(r records.Record) {
	e.t.Helper()
	if err := e.store.Put(context.Background(), r); err != nil {
		e.t.Fatal(err)
	}
	e.sync()
}

// sync waits until the server's index reflects the store (the in-process watch is
// asynchronous; a reload is what the plugin does and is synchronous).
func (e *env) sync() {
	e.t.Helper()
	if err := Reload(e.sock); err != nil {
		e.t.Fatal(err)
	}
}

// query asks gateway gw from source src over proto.
func (e *env) query(proto string, gw string, src netip.Addr, name string, qtype uint16) (*dns.Msg, error) {
	return queryAt(proto, net.JoinHostPort(gw, itoa(e.port)), src, name, qtype, nil)
}

func queryAt(proto, addr string, src netip.Addr, name string, qtype uint16, edit func(*dns.Msg)) (*dns.Msg, error) {
	var local net.Addr
	if proto == "udp" {
		local = &net.UDPAddr{IP: src.AsSlice()}
	} else {
		local = &net.TCPAddr{IP: src.AsSlice()}
	}
	c := dns.Client{Net: proto, Timeout: clientTimeout, Dialer: &net.Dialer{LocalAddr: local, Timeout: clientTimeout}}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edit != nil {
		edit(m)
	}
	resp, _, err := c.Exchange(m, addr)
	return resp, err
}

// mustQuery fails the test on a transport error.
func (e *env) mustQuery(proto, gw string, src netip.Addr, name string, qtype uint16) *dns.Msg {
	e.t.Helper()
	m, err := e.query(proto, gw, src, name, qtype)
	if err != nil {
		e.t.Fatalf("%s query %s %s from %s: %v", proto, name, dns.TypeToString[qtype], src, err)
	}
	return m
}

// answers returns the addresses or targets in m's answer section, in order.
func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		case *dns.PTR:
			out = append(out, v.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

// fakeUpstream is a resolver on loopback that answers every A query with 192.0.2.1 and
// counts what it got.
type fakeUpstream struct {
	addr  string
	count atomic.Int64
}

func startUpstream(t *testing.T, ip string) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	port := freePort(t, ip)
	u.addr = net.JoinHostPort(ip, itoa(port))
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, r *dns.Msg) {
		u.count.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")}}
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: mux}, {Listener: l, Handler: mux}} {
		if err := startDNS(srv); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

// deadUpstream is a UDP socket (and a TCP listener) that never answers. Each UDP query it
// swallows is signalled on got when got is not nil.
func deadUpstream(t *testing.T, ip string, got chan<- struct{}) string {
	t.Helper()
	port := freePort(t, ip)
	hp := net.JoinHostPort(ip, itoa(port))
	pc, err := net.ListenPacket("udp", hp)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", hp)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = pc.Close()
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		buf := make([]byte, udpReadSize)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			if got != nil {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() { // accept and hold TCP connections silently
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return hp
}

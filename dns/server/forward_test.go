package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
)

// TestForwardDeadFirstUpstream: the first upstream never answers, the second does; with a
// client timeout of 1 s the answer must still arrive (the per-try timeout is 400 ms).
// The second identical query is served from the cache.
func TestForwardDeadFirstUpstream(t *testing.T) {
	for _, proto := range protos {
		t.Run(proto, func(t *testing.T) {
			dead := deadUpstream(t, "127.0.0.1", nil)
			up := startUpstream(t, "127.0.0.1")
			e := newEnv(t, []records.Network{netA}, func(o *Options) { o.Upstreams = []string{dead, up.addr} })
			m := e.mustQuery(proto, gwA, clientA, "example.test", dns.TypeA)
			if m.Rcode != dns.RcodeSuccess || !slices.Equal(answers(m), []string{"192.0.2.1"}) {
				t.Fatalf("forwarded answer: %s %v", dns.RcodeToString[m.Rcode], answers(m))
			}
			if up.count.Load() != 1 {
				t.Fatalf("upstream saw %d queries, want 1", up.count.Load())
			}
			m = e.mustQuery(proto, gwA, clientA, "example.test", dns.TypeA)
			if !slices.Equal(answers(m), []string{"192.0.2.1"}) || up.count.Load() != 1 {
				t.Fatalf("second query: %v, upstream count %d; want a cached answer", answers(m), up.count.Load())
			}
			if got := e.srv.metrics.upstreamFailures.Load(); got != 1 {
				t.Fatalf("upstream failures = %d, want 1 (the dead server)", got)
			}
		})
	}
}

// Names in a network's domain are never forwarded, even when unknown.
func TestDomainNeverForwarded(t *testing.T) {
	up := startUpstream(t, "127.0.0.1")
	e := newEnv(t, []records.Network{netA}, func(o *Options) { o.Upstreams = []string{up.addr} })
	m := e.mustQuery("udp", gwA, clientA, "unknown.dns.moor", dns.TypeA)
	if m.Rcode != dns.RcodeNameError || up.count.Load() != 0 {
		t.Fatalf("rcode %s, upstream count %d; want NXDOMAIN and no forward", dns.RcodeToString[m.Rcode], up.count.Load())
	}
}

func TestInternalNetworkNeverForwards(t *testing.T) {
	up := startUpstream(t, "127.0.0.1")
	internal := testNet("i", "127.60.0.1", "127.60.0.0/16")
	internal.Internal = true
	e := newEnv(t, []records.Network{netA, internal}, func(o *Options) { o.Upstreams = []string{up.addr} })
	e.put(rec("i", "ci", []string{"127.60.0.10"}, "web"))
	for _, proto := range protos {
		m := e.mustQuery(proto, "127.60.0.1", netip.MustParseAddr("127.60.0.5"), "example.test", dns.TypeA)
		if m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Fatalf("%s: internal client got %s %v, want REFUSED", proto, dns.RcodeToString[m.Rcode], answers(m))
		}
		m = e.mustQuery(proto, "127.60.0.1", netip.MustParseAddr("127.60.0.5"), "web", dns.TypeA)
		if !slices.Equal(answers(m), []string{"127.60.0.10"}) {
			t.Fatalf("%s: internal client cannot resolve its own network: %v", proto, answers(m))
		}
	}
	if up.count.Load() != 0 {
		t.Fatalf("upstream saw %d queries from an internal network", up.count.Load())
	}
	// The same name from a normal network is forwarded, so the upstream works.
	if m := e.mustQuery("udp", gwA, clientA, "example.test", dns.TypeA); !slices.Equal(answers(m), []string{"192.0.2.1"}) {
		t.Fatalf("normal network: %v", answers(m))
	}
}

func TestPerNetworkUpstreams(t *testing.T) {
	hostUp := startUpstream(t, "127.0.0.1")
	netUp := startUpstream(t, "127.0.0.1")
	n := netB
	n.Upstreams = []string{netUp.addr}
	e := newEnv(t, []records.Network{netA, n}, func(o *Options) { o.Upstreams = []string{hostUp.addr} })
	e.mustQuery("udp", gwB, clientB, "example.test", dns.TypeA)
	if netUp.count.Load() != 1 || hostUp.count.Load() != 0 {
		t.Fatalf("network override: network upstream %d, host upstream %d; want 1, 0", netUp.count.Load(), hostUp.count.Load())
	}
	e.mustQuery("udp", gwA, clientA, "example.test", dns.TypeA)
	if hostUp.count.Load() != 1 {
		t.Fatalf("host upstream got %d queries, want 1 (the cache must not mix upstream sets)", hostUp.count.Load())
	}
}

// Beyond MaxForwards queries in flight, a query gets SERVFAIL at once instead of queueing.
func TestForwardLimit(t *testing.T) {
	got := make(chan struct{}, 1)
	dead := deadUpstream(t, "127.0.0.1", got)
	e := newEnv(t, []records.Network{netA}, func(o *Options) {
		o.Upstreams = []string{dead}
		o.MaxForwards = 1
		o.ForwardTimeout = guard // the first forward holds the only slot for the whole test
	})
	first := make(chan error, 1)
	go func() {
		_, err := e.query("udp", gwA, clientA, "slow.example.test", dns.TypeA)
		first <- err
	}()
	select {
	case <-got: // the first query is at the upstream: the slot is taken
	case <-time.After(guard):
		t.Fatal("the first query never reached the upstream")
	}
	m := e.mustQuery("udp", gwA, clientA, "other.example.test", dns.TypeA)
	if m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("second query: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	if n := e.srv.metrics.forwardOverload.Load(); n != 1 {
		t.Fatalf("overload counter = %d, want 1", n)
	}
	<-first // times out at the client; Close aborts the forward
}

func TestNoUpstreamServfail(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	m := e.mustQuery("udp", gwA, clientA, "example.test", dns.TypeA)
	if m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL without upstreams", dns.RcodeToString[m.Rcode])
	}
}

func TestHostUpstreams(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stub := write("stub.conf", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example\n")
	real := write("real.conf", "nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	plain := write("plain.conf", "nameserver 192.0.2.1\nnameserver 127.0.0.53\n")
	tests := []struct {
		name          string
		resolv, sdres string
		want          []string
	}{
		{"stub with systemd file", stub, real, []string{"192.0.2.53:53", "[2001:db8::53]:53"}},
		{"stub without systemd file", stub, filepath.Join(dir, "missing"), []string{"127.0.0.53:53"}},
		{"real servers kept", plain, real, []string{"192.0.2.1:53", "127.0.0.53:53"}},
	}
	for _, tc := range tests {
		got, err := hostUpstreams(tc.resolv, tc.sdres)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, got, err, tc.want)
		}
	}
}

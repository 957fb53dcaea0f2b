package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moornet/moor/control"
	"github.com/moornet/moor/dns/records"
)

// guard bounds how long a test waits for something that must happen; it is a hang guard,
// not a timing assertion.
const guard = 20 * time.Second

// TestChurn: a bounded stream of queries for a stable name gets an answer every time while
// 100 records are added and removed, each change followed by a reload as the plugin does.
func TestChurn(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	e.put(rec("a", "stable", []string{"127.10.0.2"}, "stable"))

	// Workers query until the churn is over, at most perWorker times each.
	const workers, perWorker = 4, 20000
	var wg sync.WaitGroup
	failures := make(chan string, 100)
	stop := make(chan struct{})
	var total atomic.Int64
	for w := range workers {
		proto := protos[w%len(protos)]
		wg.Go(func() {
			for range perWorker {
				select {
				case <-stop:
					return
				default:
				}
				total.Add(1)
				m, err := e.query(proto, gwA, clientA, "stable", dns.TypeA)
				switch {
				case err != nil:
					report(failures, fmt.Sprintf("%s: %v", proto, err))
				case !slices.Equal(answers(m), []string{"127.10.0.2"}):
					report(failures, fmt.Sprintf("%s: %s %v", proto, dns.RcodeToString[m.Rcode], answers(m)))
				}
			}
		})
	}
	churnDone := make(chan error, 1)
	go func() {
		defer close(churnDone)
		ctx := context.Background()
		for i := range 100 {
			id := fmt.Sprintf("churn%03d", i)
			r := rec("a", id, []string{fmt.Sprintf("127.10.2.%d", i+1)}, id, "churn")
			if err := e.store.Put(ctx, r); err != nil {
				churnDone <- err
				return
			}
			if err := Reload(e.sock); err != nil {
				churnDone <- err
				return
			}
			if i%2 == 0 {
				if err := e.store.Delete(ctx, "a", id, "eth0"); err != nil {
					churnDone <- err
					return
				}
				if err := Reload(e.sock); err != nil {
					churnDone <- err
					return
				}
			}
		}
	}()
	err := <-churnDone
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d queries during the churn", total.Load())
	close(failures)
	for f := range failures {
		t.Error("query failed during churn:", f)
	}
	// The 50 odd records stayed; the alias holds exactly their addresses.
	m := e.mustQuery("tcp", gwA, clientA, "churn", dns.TypeA)
	if len(m.Answer) != 50 {
		t.Fatalf("alias churn has %d addresses, want 50", len(m.Answer))
	}
	if m := e.mustQuery("udp", gwA, clientA, "churn000.dns.moor", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("deleted record: %s %v, want NXDOMAIN", dns.RcodeToString[m.Rcode], answers(m))
	}
}

// report records a failure without blocking when many pile up.
func report(ch chan<- string, msg string) {
	select {
	case ch <- msg:
	default:
	}
}

// Writes through the store the server watches show up without a reload.
func TestWatchUpdatesWithoutReload(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	if err := e.store.Put(context.Background(), rec("a", "late", []string{"127.10.0.77"}, "late")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(guard)
	for {
		m := e.mustQuery("udp", gwA, clientA, "late.dns.moor", dns.TypeA)
		if slices.Equal(answers(m), []string{"127.10.0.77"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record never appeared: %s", dns.RcodeToString[m.Rcode])
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A new network brings its own listener without touching the old one.
	before := e.srv.Addrs()
	c := testNet("c", "127.70.0.1", "127.70.0.0/16")
	if err := e.store.PutNetwork(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put(context.Background(), rec("c", "x", []string{"127.70.0.9"}, "x")); err != nil {
		t.Fatal(err)
	}
	e.sync()
	if got := e.srv.Addrs(); len(got) != len(before)+1 {
		t.Fatalf("listeners after new network: %v (before %v)", got, before)
	}
	if m := e.mustQuery("udp", "127.70.0.1", netip.MustParseAddr("127.70.0.5"), "x", dns.TypeA); !slices.Equal(answers(m), []string{"127.70.0.9"}) {
		t.Fatalf("new network: %v", answers(m))
	}
	if err := e.store.DeleteNetwork(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	e.sync()
	if got := e.srv.Addrs(); !slices.Equal(got, before) {
		t.Fatalf("listeners after network removal: %v, want %v", got, before)
	}
}

func TestRestartServesSameRecords(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	e.put(rec("a", "c1", []string{"127.10.0.31"}, "persist"))
	if got := answers(e.mustQuery("udp", gwA, clientA, "persist", dns.TypeA)); !slices.Equal(got, []string{"127.10.0.31"}) {
		t.Fatalf("before restart: %v", got)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.query("udp", gwA, clientA, "persist", dns.TypeA); err == nil {
		t.Fatal("closed server still answers")
	}
	// A new server (as a new process would) on the same store directory.
	st, err := records.NewLocal(e.store.Root())
	if err != nil {
		t.Fatal(err)
	}
	e.store = st
	e.start(nil)
	if got := answers(e.mustQuery("udp", gwA, clientA, "persist", dns.TypeA)); !slices.Equal(got, []string{"127.10.0.31"}) {
		t.Fatalf("after restart: %v", got)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t, []records.Network{netA}, nil)
	e.put(rec("a", "c1", []string{"127.10.0.41"}, "m"))
	const n = 7
	for range n {
		e.mustQuery("udp", gwA, clientA, "m", dns.TypeA)
	}
	e.mustQuery("udp", gwA, clientNone, "m", dns.TypeA) // refused, still counted
	body := getMetrics(t, e.sock)
	expect := map[string]string{
		`moor_dns_queries_total`:                              strconv.Itoa(n + 1),
		`moor_dns_responses_total{rcode="NOERROR"}`:           strconv.Itoa(n),
		`moor_dns_responses_total{rcode="REFUSED"}`:           "1",
		`moor_dns_records`:                                    "1",
		`moor_dns_networks`:                                   "1",
		`moor_dns_request_duration_seconds_count`:             strconv.Itoa(n + 1),
		`moor_dns_request_duration_seconds_bucket{le="+Inf"}`: strconv.Itoa(n + 1),
	}
	for metric, want := range expect {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`)
		m := re.FindStringSubmatch(body)
		if m == nil || m[1] != want {
			t.Errorf("%s = %v, want %s", metric, m, want)
		}
	}
	if !Healthy(e.sock) {
		t.Error("Healthy() = false for a running server")
	}
	if Healthy(filepath.Join(t.TempDir(), "none.sock")) {
		t.Error("Healthy() = true without a server")
	}
}

func getMetrics(t *testing.T, sock string) string {
	t.Helper()
	c, err := control.NewClient(sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRunLifecycle: Run holds the pid lock (a second Run fails), serves, and returns by
// itself once no record is left for the idle timeout.
func TestRunLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	st, err := records.NewLocal(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := testNet("w", "127.0.0.1", "127.0.0.0/8") // the host's own source address is inside
	if err := st.PutNetwork(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, rec("w", "c1", []string{"127.0.0.99"}, "first")); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, "127.0.0.1")
	opts := Options{
		StoreDir:       st.Root(),
		Port:           port,
		ResolvConf:     filepath.Join(dir, "missing-resolv.conf"),
		ControlSocket:  filepath.Join(dir, "run", "dns.sock"),
		PidFile:        filepath.Join(dir, "run", "dns.pid"),
		IdleTimeout:    300 * time.Millisecond,
		KeepPrivileges: true,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, opts) }()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The control socket comes up once Start is complete, as a plugin would wait for it.
	for deadline := time.Now().Add(guard); !Healthy(opts.ControlSocket); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("server never became healthy")
		}
	}
	if err := WaitAnswer(addr, "first", guard); err != nil {
		t.Fatal(err)
	}
	if pid, ok := Running(opts.PidFile); !ok || pid != os.Getpid() {
		t.Fatalf("Running() = %d, %v; want our pid", pid, ok)
	}
	second := opts
	second.Port = freePort(t, "127.0.0.1")
	second.ControlSocket = filepath.Join(dir, "other.sock")
	var are *AlreadyRunningError
	if err := Run(ctx, second); !errors.As(err, &are) || are.PID != os.Getpid() {
		t.Fatalf("second Run: %v, want *AlreadyRunningError naming pid %d", err, os.Getpid())
	}
	// WaitAnswer for a name that does not exist yet times out with a coded error...
	var we *WaitError
	if err := WaitAnswer(addr, "second", 100*time.Millisecond); !errors.As(err, &we) || we.CNICode() != 107 {
		t.Fatalf("WaitAnswer for a missing name: %v", err)
	}
	// ...and succeeds once the plugin wrote it and asked for a reload.
	if err := st.Put(ctx, rec("w", "c2", []string{"127.0.0.98"}, "second")); err != nil {
		t.Fatal(err)
	}
	if err := Reload(opts.ControlSocket); err != nil {
		t.Fatal(err)
	}
	if err := WaitAnswer(addr, "second", guard); err != nil {
		t.Fatal(err)
	}
	// Remove every record: the server stops by itself after the idle timeout.
	for _, id := range []string{"c1", "c2"} {
		if err := st.Delete(ctx, "w", id, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := Reload(opts.ControlSocket); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(guard):
		t.Fatal("Run did not stop after its records were gone")
	}
	if _, ok := Running(opts.PidFile); ok {
		t.Fatal("pid lock still held after Run returned")
	}
	if _, err := os.Stat(opts.ControlSocket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("control socket left behind: %v", err)
	}
	if Healthy(opts.ControlSocket) {
		t.Fatal("healthy after stop")
	}
}

func TestOptionsValidation(t *testing.T) {
	bad := []Options{
		{TTL: 500 * time.Millisecond},
		{Port: 70000},
		{Domain: "bad domain"},
		{Upstreams: []string{"not-an-ip"}},
		{ControlAddr: "192.0.2.1:80"},
		{Chain: []string{"local", "acl"}},
		{Chain: []string{"metrics", "local"}},
		{Chain: []string{"acl", "local", "bogus"}},
	}
	for _, o := range bad {
		var ce *ConfigError
		if _, err := New(o); !errors.As(err, &ce) {
			t.Errorf("New(%+v) = %v, want *ConfigError", o, err)
		}
	}
	s, err := New(Options{Chain: []string{"guard", "acl", "local"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Chain(); !slices.Equal(got, []string{"guard", "acl", "local"}) {
		t.Fatalf("Chain() = %v", got)
	}
}

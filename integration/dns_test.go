package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/plugintest"
)

// dnsWorld is a world whose networks chain moor-dns after moor-bridge, with the
// sidecar's paths in the test's own directory (so it is this test's sidecar, serving
// this test's host netns).
type dnsWorld struct {
	*world
	dir string
}

func newDNSWorld(t *testing.T) *dnsWorld {
	w := &dnsWorld{world: newWorld(t, ""), dir: t.TempDir()}
	t.Cleanup(w.stopSidecar)
	return w
}

func (w *dnsWorld) dnsConf(extra map[string]any) map[string]any {
	conf := map[string]any{
		"type":          "moor-dns",
		"storeDir":      filepath.Join(w.dir, "records"),
		"controlSocket": filepath.Join(w.dir, "dns.sock"),
		"pidFile":       filepath.Join(w.dir, "dns.pid"),
		"idleTimeout":   "-1s",
		"capabilities":  map[string]any{"aliases": true},
	}
	for k, v := range extra {
		conf[k] = v
	}
	return conf
}

func (w *dnsWorld) network(name, bridge, subnet string, dnsExtra map[string]any) *libcni.NetworkConfigList {
	return conflist(w.t, "1.1.0", name, w.bridgeConf(bridge, subnet, nil), w.dnsConf(dnsExtra))
}

// stopSidecar ends the sidecar this test's ADDs started, by the PID in its pid file.
func (w *dnsWorld) stopSidecar() { stopSidecarAt(filepath.Join(w.dir, "dns.pid")) }

func (w *dnsWorld) sidecarPID() int {
	data, err := os.ReadFile(filepath.Join(w.dir, "dns.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// container attaches a named container with aliases.
func (w *dnsWorld) container(list *libcni.NetworkConfigList, name string, aliases ...string) (ns.NetNS, *libcni.RuntimeConf, string) {
	w.t.Helper()
	ctr := plugintestNetns(w.t)
	rt := attachment(ctr, "eth0")
	rt.ContainerID = "c" + plugintest.RandomSuffix() + plugintest.RandomSuffix()
	rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", name})
	if len(aliases) > 0 {
		rt.CapabilityArgs = map[string]any{"aliases": aliases}
	}
	res, err := w.rt.add(list, rt)
	if err != nil {
		w.t.Fatalf("ADD %s: %v", name, err)
	}
	if len(res.DNS.Nameservers) == 0 || res.DNS.Search[0] != "dns.moor" {
		w.t.Errorf("result dns %+v", res.DNS)
	}
	return ctr, rt, ipOf(res)
}

// lookup asks server (ip) from inside netns for name's A records.
func lookup(netns ns.NetNS, server, name string, timeout time.Duration) ([]string, int, error) {
	var resp *dns.Msg
	err := netns.Do(func(ns.NetNS) error {
		c := dns.Client{Net: "udp", Timeout: timeout}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		var err error
		resp, _, err = c.Exchange(m, net.JoinHostPort(server, "53"))
		return err
	})
	if err != nil {
		return nil, -1, err
	}
	var ips []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return ips, resp.Rcode, nil
}

// checkThenDelete runs CHECK of rt (which must pass) and DEL, after which name must be
// unknown (NXDOMAIN) to client asking gw.
func (w *dnsWorld) checkThenDelete(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, client ns.NetNS, gw, name string) {
	w.t.Helper()
	if err := w.rt.check(list, rt); err != nil {
		w.t.Errorf("CHECK: %v", err)
	}
	if err := w.rt.del(list, rt); err != nil {
		w.t.Fatal(err)
	}
	if _, rcode, _ := lookup(client, gw, name, 2*time.Second); rcode != dns.RcodeNameError {
		w.t.Errorf("after DEL: %s rcode %d, want NXDOMAIN", name, rcode)
	}
}

func wantA(t *testing.T, netns ns.NetNS, server, name string, want ...string) {
	t.Helper()
	got, rcode, err := lookup(netns, server, name, 2*time.Second)
	sort.Strings(want)
	if err != nil || rcode != dns.RcodeSuccess || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: got %v rcode %d err %v, want %v", name, got, rcode, err, want)
	}
}

func TestDNSNamesAliasesShortIDs(t *testing.T) {
	w := newDNSWorld(t)
	list := w.network("dnsnet", "mdns0", "10.220.0.0/24", nil)
	web, rtWeb, ipWeb := w.container(list, "web", "frontend", "www.site")
	db, _, ipDB := w.container(list, "db")
	gw := "10.220.0.1"
	wantA(t, db, gw, "web", ipWeb)
	wantA(t, db, gw, "frontend", ipWeb)
	wantA(t, db, gw, "www.site", ipWeb)
	wantA(t, db, gw, rtWeb.ContainerID[:12], ipWeb)
	wantA(t, db, gw, "web.dnsnet", ipWeb)
	wantA(t, db, gw, "web.dns.moor", ipWeb)
	wantA(t, web, gw, "db", ipDB)
	if _, rcode, _ := lookup(web, gw, "nosuch.dns.moor", 2*time.Second); rcode != dns.RcodeNameError {
		t.Errorf("unknown name in the domain: rcode %d, want NXDOMAIN", rcode)
	}
	// They reach each other by name: resolve, then ping the answer.
	ips, _, _ := lookup(web, gw, "db", 2*time.Second)
	if len(ips) == 1 {
		if err := ping(web, ips[0]); err != nil {
			t.Error(err)
		}
	}
	// CHECK passes; DEL removes the name.
	w.checkThenDelete(list, rtWeb, db, gw, "web.dns.moor")
	if err := w.rt.del(list, rtWeb); err != nil {
		t.Errorf("second DEL: %v", err)
	}
}

func TestDNSRoundRobinAlias(t *testing.T) {
	w := newDNSWorld(t)
	list := w.network("rrnet", "mdns0", "10.221.0.0/24", nil)
	var ips []string
	var client ns.NetNS
	for i := 0; i < 3; i++ {
		ctr, _, ip := w.container(list, fmt.Sprintf("api%d", i), "api")
		ips = append(ips, ip)
		client = ctr
	}
	wantA(t, client, "10.221.0.1", "api", ips...)
}

func TestDNSBadAliasRefused(t *testing.T) {
	w := newDNSWorld(t)
	list := w.network("badalias", "mdns0", "10.222.0.0/24", nil)
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	rt.CapabilityArgs = map[string]any{"aliases": []string{"bad name"}}
	_, err := w.rt.add(list, rt)
	wantCode(t, err, 7, "bad name")
	st, _ := records.NewLocal(filepath.Join(w.dir, "records"))
	defer st.Close()
	if recs, _ := st.List(t.Context(), "badalias"); len(recs) != 0 {
		t.Errorf("records left: %+v", recs)
	}
}

// Forwarding through fake upstreams inside the test's host netns: the first never
// answers, the second does; the client's 1 s timeout proves the failover is fast.
func TestDNSForwardingFailsOver(t *testing.T) {
	w := newDNSWorld(t)
	var dead, live net.PacketConn
	err := w.host.Do(func(ns.NetNS) error {
		var err error
		if dead, err = net.ListenPacket("udp", "127.0.0.1:5354"); err != nil {
			return err
		}
		live, err = net.ListenPacket("udp", "127.0.0.1:5353")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	server := &dns.Server{PacketConn: live, Handler: dns.HandlerFunc(func(rw dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.99")})
		_ = rw.WriteMsg(m)
	})}
	go func() { _ = server.ActivateAndServe() }()
	defer server.Shutdown()

	list := w.network("fwdnet", "mdns0", "10.223.0.0/24", map[string]any{"upstreams": []string{"127.0.0.1:5354", "127.0.0.1:5353"}})
	ctr, _, _ := w.container(list, "client")
	got, rcode, err := lookup(ctr, "10.223.0.1", "example.org", time.Second)
	if err != nil || rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != "192.0.2.99" {
		t.Errorf("forwarded lookup: %v rcode %d err %v", got, rcode, err)
	}
	// An internal network never forwards.
	intList := conflist(t, "1.1.0", "intdns", w.bridgeConf("mdns1", "10.224.0.0/24", map[string]any{"internal": true, "isDefaultGateway": false}),
		w.dnsConf(map[string]any{"internal": true, "upstreams": []string{"127.0.0.1:5353"}}))
	ictr, _, _ := w.container(intList, "isolated")
	if got, rcode, _ := lookup(ictr, "10.224.0.1", "example.org", time.Second); len(got) != 0 || rcode == dns.RcodeSuccess {
		t.Errorf("internal network forwarded: %v rcode %d", got, rcode)
	}
}

func TestDNSRefusesClientsOutsideTheNetwork(t *testing.T) {
	w := newDNSWorld(t)
	list := w.network("scoped", "mdns0", "10.225.0.0/24", nil)
	_, _, _ = w.container(list, "web")
	// Give the outside a route to the bridge, so its query reaches the server.
	_ = w.outside.Do(func(ns.NetNS) error {
		_, err := execOut("ip", "route", "add", "10.225.0.0/24", "via", hostUplinkIP)
		return err
	})
	_, rcode, err := lookup(w.outside, "10.225.0.1", "web", 2*time.Second)
	if err == nil && rcode != dns.RcodeRefused {
		t.Errorf("a client outside the network got rcode %d, want REFUSED", rcode)
	}
}

// 50 concurrent ADD/DEL never lose or leak a record; a query stream keeps getting
// answers while containers come and go; a killed sidecar comes back with every record.
func TestDNSChurnAndRestart(t *testing.T) {
	w := newDNSWorld(t)
	list := w.network("churn", "mdns0", "10.226.0.0/22", nil)
	stable, _, ipStable := w.container(list, "stable")

	stop := make(chan struct{})
	var failures, answered int
	var qwg sync.WaitGroup
	qwg.Add(1)
	go func() {
		defer qwg.Done()
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			got, rcode, err := lookup(stable, "10.226.0.1", "stable", time.Second)
			if err != nil || rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != ipStable {
				failures++
			} else {
				answered++
			}
		}
	}()

	const workers, perWorker = 10, 10 // 100 containers come and go, 10 at a time
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for wkr := 0; wkr < workers; wkr++ {
		wg.Add(1)
		go func(wkr int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				ctr, err := plugintest.NewNamedNetns(fmt.Sprintf("moorit-dnsch-%s", plugintest.RandomSuffix()))
				if err != nil {
					errs <- err
					return
				}
				rt := attachment(ctr, "eth0")
				rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", fmt.Sprintf("w%d-%d", wkr, i)})
				if _, err := w.rt.add(list, rt); err != nil {
					errs <- fmt.Errorf("ADD: %w", err)
				} else if err := w.rt.del(list, rt); err != nil {
					errs <- fmt.Errorf("DEL: %w", err)
				}
				_ = plugintest.DeleteNetns(ctr)
			}
		}(wkr)
	}
	wg.Wait()
	close(stop)
	qwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("query stream during churn: %d answered, %d failed", answered, failures)
	if failures != 0 || answered == 0 {
		t.Errorf("query stream during churn: %d answered, %d failed", answered, failures)
	}
	st, _ := records.NewLocal(filepath.Join(w.dir, "records"))
	defer st.Close()
	if recs, _ := st.List(t.Context(), "churn"); len(recs) != 1 {
		t.Errorf("after churn %d records, want only the stable one", len(recs))
	}

	// Kill the sidecar; the next ADD starts a new one, which serves the old records too.
	pid := w.sidecarPID()
	if pid <= 0 {
		t.Fatal("no sidecar pid")
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	_, _, ipNew := w.container(list, "newcomer")
	if w.sidecarPID() == pid {
		t.Error("the sidecar was not restarted")
	}
	wantA(t, stable, "10.226.0.1", "stable", ipStable)
	wantA(t, stable, "10.226.0.1", "newcomer", ipNew)
}

// MOOR_RUN_DIR moves the sidecar's default paths, so several "hosts" on one machine each
// get their own sidecar; in a namespace that is not the machine's they sit in the
// namespace's own directory under it.
func TestDNSRunDirFromEnvironment(t *testing.T) {
	run := t.TempDir()
	t.Setenv(server.RunDirEnv, run)
	h := newNSHost(t, run)
	list := h.network("rundir", "mdns0", "10.227.0.0/24", "-1s")
	_, rt, ip := h.container(list, "web")
	if _, err := os.Stat(filepath.Join(h.paths.StoreDir, "rundir", rt.ContainerID+".eth0.json")); err != nil {
		t.Errorf("record not under MOOR_RUN_DIR: %v", err)
	}
	h.sidecar()
	wantA(t, h.host, "10.227.0.1", "web", ip)
}

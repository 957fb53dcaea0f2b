package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/cmd/moor/internal/cli"
	"github.com/moornet/moor/cmd/moor/internal/hostns"
	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/cmd/moor/internal/view"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/netnsid"
)

// create -> connect two netns -> inspect shows both -> they ping -> disconnect -> rm leaves
// no bridge, no rule, no IPAM file, no conflist.
func TestNetworkLifecycle(t *testing.T) {
	w := newWorld(t)
	id := strings.TrimSpace(w.ok("network", "create", "--disable-dns", "--subnet", "10.231.0.0/24",
		"--ipam-opt", "dataDir="+w.dataDir, "--label", "env=test", "-o", "mtu=1400", "web"))
	if id != conflist.ID("web") {
		t.Fatalf("create printed %q, want the network ID", id)
	}
	file := filepath.Join(w.confDir, "60-moor-web.conflist")
	conf, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o644 {
		t.Errorf("conflist mode %v", st.Mode().Perm())
	}
	golden(t, "lifecycle-conflist", w.normalize(string(conf)))

	c1, c2 := w.container(), w.container()
	if name(c1) > name(c2) {
		c1, c2 = c2, c1 // inspect's Containers are sorted by ID: keep the golden's order
	}
	w.repl = append(w.repl, name(c1), "<C1>", name(c2), "<C2>",
		state.EndpointID("web", name(c1), "eth0"), "<EP1>", state.EndpointID("web", name(c2), "eth0"), "<EP2>")
	out := w.ok("network", "connect", "web", name(c1))
	if !strings.Contains(out, "10.231.0.2/24 gateway 10.231.0.1") {
		t.Errorf("connect summary:\n%s", out)
	}
	w.ok("network", "connect", "--name", "second", "web", c2.Path())

	golden(t, "lifecycle-ls", w.normalize(w.ok("network", "ls")))
	inspect := w.ok("network", "inspect", "web")
	golden(t, "lifecycle-inspect", w.normalize(inspect))
	var docs []view.Inspect
	if err := json.Unmarshal([]byte(inspect), &docs); err != nil || len(docs) != 1 {
		t.Fatalf("inspect output: %v\n%s", err, inspect)
	}
	doc := docs[0]
	if e := doc.Containers[name(c1)]; e.IPv4Address != "10.231.0.2/24" || e.Name != name(c1) || e.MacAddress != macOf(t, c1, "eth0") {
		t.Errorf("first container %+v (its eth0 has MAC %s)", e, macOf(t, c1, "eth0"))
	}
	if e := doc.Containers[name(c2)]; e.IPv4Address != "10.231.0.3/24" || e.Name != "second" {
		t.Errorf("second container %+v", e)
	}
	if b := doc.Live.Bridge; b == nil || !b.Present || !b.Up || doc.Live.Firewall == nil || !doc.Live.Firewall.RulesPresent {
		t.Errorf("live %+v", doc.Live)
	}
	if err := ping(c1, "10.231.0.3"); err != nil {
		t.Error(err)
	}
	if err := ping(c2, "10.231.0.2"); err != nil {
		t.Error(err)
	}
	// -f formats with a template.
	if got := w.ok("network", "inspect", "-f", "{{.Name}} {{len .Containers}} {{.Live.Bridge.Up}}", conflist.ShortID("web")); got != "web 2 true\n" {
		t.Errorf("inspect -f: %q", got)
	}

	w.ok("network", "disconnect", "web", name(c1))
	w.ok("network", "disconnect", "web", c2.Path())
	bridge := conflist.DefaultBridgeName("web")
	if n := w.bridgePorts(bridge); n != 0 {
		t.Errorf("%d ports left on %s after disconnect", n, bridge)
	}
	if got := w.ok("network", "rm", "web"); got != "web\n" {
		t.Errorf("rm printed %q", got)
	}
	if w.linkExists(bridge) {
		t.Errorf("bridge %s left behind", bridge)
	}
	if rules := w.inHost("nft", "list", "ruleset"); strings.Contains(rules, "net=web") {
		t.Errorf("rules left behind:\n%s", rules)
	}
	for _, p := range []string{filepath.Join(w.dataDir, "web.db"), filepath.Join(w.dataDir, "web.db.lock"), file} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

// Subnets that overlap another moor network or a host route are refused; without
// --subnet the next free /24 of the pool is taken, skipping routes.
func TestCreateSubnets(t *testing.T) {
	w := newWorld(t)
	dd := "--ipam-opt=dataDir=" + w.dataDir
	w.ok("network", "create", dd, "--disable-dns", "--subnet", "10.232.0.0/24", "web")
	w.fails(1, `overlaps network "web" (10.232.0.0/24)`, "network", "create", "--subnet", "10.232.0.128/25", "other")
	w.addRoute("mcli-up0", "10.233.0.1/24")
	w.fails(1, "overlaps host route 10.233.0.0/24 dev mcli-up0", "network", "create", "--subnet", "10.233.0.0/16", "other")
	w.fails(1, `network "web" already exists`, "network", "create", "web")

	w.ok("network", "create", dd, "a")
	w.addRoute("mcli-up1", "10.89.1.1/24")
	w.ok("network", "create", dd, "b")
	w.ok("network", "create", dd, "--ipv6", "c")
	got := w.ok("network", "ls", "--format", "{{.Name}} {{.Subnet}}", "-f", "name=a", "-f", "name=b", "-f", "name=c")
	for _, want := range []string{"a 10.89.0.0/24", "b 10.89.2.0/24", "c 10.89.3.0/24,fd"} {
		if !strings.Contains(got, want) {
			t.Errorf("ls:\n%s\nwant a line starting %q", got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(w.confDir, "60-moor-other.conflist")); !os.IsNotExist(err) {
		t.Errorf("a refused network left its file (%v)", err)
	}
}

// rm refuses while containers are attached, -f forces; prune removes only empty networks.
func TestRmAndPrune(t *testing.T) {
	w := newWorld(t)
	for _, n := range []string{"busy", "idle1", "idle2"} {
		w.ok("network", "create", "--disable-dns", "--ipam-opt", "dataDir="+w.dataDir, n)
	}
	c := w.container()
	w.ok("network", "connect", "-p", "18090:80", "busy", name(c))
	w.fails(1, "has 1 container(s) attached ("+name(c)+")", "network", "rm", "busy")
	w.fails(1, `network "nosuch" not found`, "network", "rm", "nosuch")

	out := w.ok("network", "prune")
	if out != "Deleted Networks:\nidle1\nidle2\n" {
		t.Errorf("prune printed %q", out)
	}
	if ls := w.ok("network", "ls", "-q", "--no-trunc"); ls != conflist.ID("busy")+"\n" {
		t.Errorf("after prune ls -q: %q", ls)
	}
	bridge := conflist.DefaultBridgeName("busy")
	if !w.linkExists(bridge) {
		t.Fatalf("the busy network's bridge is gone")
	}
	w.ok("network", "rm", "-f", "busy")
	if w.linkExists(bridge) {
		t.Errorf("rm -f left bridge %s", bridge)
	}
	if rules := w.inHost("nft", "list", "ruleset"); strings.Contains(rules, "net=busy") {
		t.Errorf("rm -f left rules:\n%s", rules)
	}
	if _, err := os.Stat(filepath.Join(w.dataDir, "busy.db")); !os.IsNotExist(err) {
		t.Errorf("rm -f left the IPAM store (%v)", err)
	}
	var contLinks int
	_ = c.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("eth0")
		if err == nil && l != nil {
			contLinks++
		}
		return nil
	})
	if contLinks != 0 {
		t.Error("rm -f left the container's interface")
	}
}

// ls formats: table, quiet, no-trunc, json, templates, filters by driver and label.
func TestLsFormats(t *testing.T) {
	w := newWorld(t)
	dd := "--ipam-opt=dataDir=" + w.dataDir
	w.ok("network", "create", dd, "--subnet", "10.236.0.0/24", "--label", "team=web", "web")
	w.ok("network", "create", dd, "--disable-dns", "--internal", "--subnet", "10.237.0.0/24", "--label", "team=db", "db")
	w.ok("network", "create", "-d", "host", "hostnet")
	w.ok("network", "create", "-d", "none", "isolated")
	var b strings.Builder
	for _, args := range [][]string{
		{"network", "ls"},
		{"network", "ls", "--no-trunc"},
		{"network", "ls", "-q"},
		{"network", "ls", "--format", "json"},
		{"network", "ls", "--format", "table {{.Name}}\t{{.Driver}}\t{{.Internal}}\t{{.DNS}}"},
		{"network", "ls", "--format", "{{.Name}}: {{json .Labels}}", "-f", "label=team"},
		{"network", "ls", "-f", "driver=bridge", "-f", "label=team=db", "--format", "{{.Name}}"},
		{"network", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Internal}} {{json .Options}}", "db", "hostnet", "isolated"},
	} {
		b.WriteString("$ moor " + strings.Join(args, " ") + "\n" + w.ok(args...))
	}
	golden(t, "ls-formats", w.normalize(b.String()))
	w.fails(2, "--filter", "network", "ls", "-f", "colour=red")
	w.fails(2, "--format", "network", "ls", "--format", "{{.Nope}}")
}

// bridgePorts counts the ports of a bridge in the host.
func (w *world) bridgePorts(bridge string) int {
	w.t.Helper()
	h, err := hostns.Open(w.host.Path())
	if err != nil {
		w.t.Fatal(err)
	}
	defer h.Close()
	ports, err := state.BridgePorts(h, bridge)
	if err != nil {
		w.t.Fatal(err)
	}
	return len(ports)
}

func (w *world) linkExists(name string) bool {
	found := false
	_ = w.host.Do(func(ns.NetNS) error {
		_, err := netlinksafe.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

// addRoute gives the host a route: a veth end with an address (its peer stays in the host).
func (w *world) addRoute(link, cidr string) {
	w.t.Helper()
	err := w.host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: link}, PeerName: link + "p"}); err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		addr, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		w.t.Fatalf("route %s on %s: %v", cidr, link, err)
	}
}

// macOf reads the MAC of a link in a netns.
func macOf(t *testing.T, n ns.NetNS, link string) string {
	t.Helper()
	var mac string
	err := n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// With DNS (the default), connect's --name and --alias reach moor-dns: the other container
// resolves them through the sidecar on the gateway; rm removes the network's records. The
// CLI finds the sidecar and records of the --netns namespace as moor-dns does, under
// MOOR_RUN_DIR.
func TestConnectWithDNS(t *testing.T) {
	w := newWorld(t)
	run := t.TempDir()
	t.Setenv(cli.EnvRunDir, run) // moor-dns (exec'd by the CLI) and the CLI both read it
	w.dnsDir, w.dnsSk = "", ""
	paths := hostPaths(t, w, run)
	t.Cleanup(func() { stopSidecar(t, paths.PidFile) })
	w.ok("network", "create", "--subnet", "10.239.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "--dns-domain", "corp.test", "web")
	c1, c2 := w.container(), w.container()
	out := w.ok("network", "connect", "--alias", "db", "--name", "pg", "web", name(c1))
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "dns 10.239.0.1 search corp.test") {
		t.Errorf("connect summary lacks the DNS server:\n%s", out)
	}
	w.ok("network", "connect", "--ip", "10.239.0.77", "web", name(c2))
	for _, q := range []string{"db.", "pg.", "pg.corp.test."} {
		if got := lookupA(t, c2, "10.239.0.1:53", q); got != "10.239.0.2" {
			t.Errorf("%s from the second container: %q, want 10.239.0.2", q, got)
		}
	}
	if got := lookupA(t, c1, "10.239.0.1:53", name(c2)+"."); got != "10.239.0.77" {
		t.Errorf("the second container (--ip 10.239.0.77) resolves to %q", got)
	}
	if err := ping(c1, "10.239.0.77"); err != nil {
		t.Error(err)
	}
	if got := w.ok("network", "inspect", "-f", "{{.Live.DNS.Answering}} {{.Live.DNS.Records}} {{.Live.DNS.Socket}}", "web"); got != "true 2 "+paths.ControlSocket+"\n" {
		t.Errorf("inspect Live.DNS: %q, want the sidecar on %s", got, paths.ControlSocket)
	}
	w.ok("network", "disconnect", "web", name(c1))
	w.ok("network", "disconnect", "web", name(c2))
	w.ok("network", "rm", "web")
	if _, err := os.Stat(filepath.Join(paths.StoreDir, "web")); !os.IsNotExist(err) {
		t.Errorf("the network's records are still in %s (%v)", paths.StoreDir, err)
	}
}

// hostPaths are the DNS sidecar paths moor-dns uses in the world's host namespace.
func hostPaths(t *testing.T, w *world, run string) server.Paths {
	t.Helper()
	id, err := netnsid.Of(w.host.Path())
	if err != nil {
		t.Fatal(err)
	}
	return server.PathsFor(run, id, false)
}

// connect under --netns while the sidecar of another host namespace runs, on the same
// MOOR_RUN_DIR and with a network of the same name and subnet: each host namespace gets
// its own sidecar and records, and each container resolves its own host's names only.
func TestConnectDNSPerHostNamespace(t *testing.T) {
	run := t.TempDir()
	t.Setenv(cli.EnvRunDir, run)
	var worlds []*world
	var sidecars []int
	for i := range 2 {
		w := newWorld(t)
		w.dnsDir, w.dnsSk = "", ""
		paths := hostPaths(t, w, run)
		t.Cleanup(func() { stopSidecar(t, paths.PidFile) })
		w.ok("network", "create", "--subnet", "10.237.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "shared")
		c := w.container()
		w.ok("network", "connect", "--name", fmt.Sprintf("app%d", i), "--ip", fmt.Sprintf("10.237.0.%d", 10+i), "shared", name(c))
		pid, ok := server.Running(paths.PidFile)
		if !ok {
			t.Fatalf("host %d: no sidecar holds %s", i, paths.PidFile)
		}
		sidecars = append(sidecars, pid)
		worlds = append(worlds, w)
		t.Cleanup(func() { w.ok("network", "disconnect", "shared", name(c)) })
		// Every host resolves its own container, and not the other host's.
		other := fmt.Sprintf("app%d.dns.moor.", 1-i) // in the domain: never forwarded
		if got := lookupA(t, c, "10.237.0.1:53", fmt.Sprintf("app%d.", i)); got != fmt.Sprintf("10.237.0.%d", 10+i) {
			t.Errorf("host %d resolves its own container to %q", i, got)
		}
		if i == 1 {
			if got := lookupA(t, c, "10.237.0.1:53", other); got != "" {
				t.Errorf("host 1 resolves host 0's container: %q", got)
			}
		}
	}
	if sidecars[0] == sidecars[1] {
		t.Fatalf("both host namespaces use sidecar %d", sidecars[0])
	}
	for i, w := range worlds {
		if got := w.ok("network", "inspect", "-f", "{{.Live.DNS.Answering}} {{.Live.DNS.Records}}", "shared"); got != "true 1\n" {
			t.Errorf("host %d: inspect Live.DNS: %q", i, got)
		}
	}
}

// lookupA asks server for name's A record from inside netns.
func lookupA(t *testing.T, netns ns.NetNS, server, name string) string {
	t.Helper()
	var got string
	err := netns.Do(func(ns.NetNS) error {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Timeout: 2 * time.Second}
		r, _, err := c.Exchange(m, server)
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				got = a.A.String()
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("asking %s for %s: %v", server, name, err)
	}
	return got
}

// stopSidecar ends the DNS sidecar moor-dns started for the test (by the pid in its pid
// file) and waits until it is gone.
func stopSidecar(t *testing.T, pidFile string) {
	if pid, err := server.Stop(pidFile, 5*time.Second); err != nil && pid > 0 {
		t.Logf("stopping the DNS sidecar %d: %v", pid, err)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

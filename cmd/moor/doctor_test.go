package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/plugintest"
)

// A clean world has nothing to report: exit 0.
func TestDoctorClean(t *testing.T) {
	w := newWorld(t)
	w.ok("network", "create", "--disable-dns", "--subnet", "10.238.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "web")
	w.ok("network", "connect", "web", name(w.container()))
	out := w.ok("doctor")
	for _, want := range []string{"bridge links can be created", "veth links can be created", "STATUS: every plugin is ready", "1 attachment(s); stores and kernel agree", "no problems found"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

// A network with the finer options (icc false, IPv4 routed) is checked with them: its
// rules are what they should be, so there is nothing to report.
func TestDoctorCleanFineOptions(t *testing.T) {
	w := newWorld(t)
	w.ok("network", "create", "--disable-dns", "--subnet", "10.239.0.0/24", "--ipam-opt", "dataDir="+w.dataDir,
		"-o", "icc=false", "-o", "gatewayModeIPv4=routed", "-o", "ipMasq=false", "fine")
	w.ok("network", "connect", "fine", name(w.container()))
	if out := w.ok("doctor"); !strings.Contains(out, "no problems found") {
		t.Errorf("doctor on a clean network with finer options:\n%s", out)
	}
}

// A bridge set down and flushed rules while containers are attached are problems --fix
// cannot repair (the next ADD does): they stay reported with advice.
func TestDoctorLiveMismatch(t *testing.T) {
	w := newWorld(t)
	w.ok("network", "create", "--disable-dns", "--subnet", "10.240.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "web")
	w.ok("network", "connect", "web", name(w.container()))
	bridge := conflist.DefaultBridgeName("web")
	w.inHost("ip", "link", "set", bridge, "down")
	fw, err := firewall.New(firewall.KindNFTables, firewall.Options{NetNS: w.host})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.RemoveNetwork("web"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"doctor"}, {"doctor", "--fix"}} {
		out, _, code := w.moor(args...)
		if code != 3 {
			t.Errorf("%v: exit %d, want 3:\n%s", args, code, out)
		}
		for _, want := range []string{"bridge " + bridge + " is down while 1 container(s) are attached", "nftables network rules missing while containers are attached"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v output lacks %q:\n%s", args, want, out)
			}
		}
	}
	if got := w.ok("network", "inspect", "-f", "{{.Live.Bridge.Up}} {{.Live.Firewall.RulesPresent}} {{len .Live.Firewall.Missing}}", "web"); !strings.HasPrefix(got, "false false ") || got == "false false 0\n" {
		t.Errorf("inspect Live: %q", got)
	}
}

// doctor finds each planted kind of drift, and --fix clears what is safe.
func TestDoctorFindsDrift(t *testing.T) {
	w := newWorld(t)
	w.ok("network", "create", "--disable-dns", "--subnet", "10.234.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "web")
	w.ok("network", "create", "--subnet", "10.235.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "named")
	gone, err := plugintest.NewNamedNetns(netnsPrefix + "-c-" + plugintest.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plugintest.DeleteNetns(gone) })
	kept := w.container()
	w.ok("network", "connect", "web", name(gone))
	w.ok("network", "connect", "-p", "18095:80", "web", name(kept))

	// 1. a netns deleted behind the runtime's back
	if err := plugintest.DeleteNetns(gone); err != nil {
		t.Fatal(err)
	}
	// 2. a veth left on the bridge, named as an attachment nobody holds
	bridge := conflist.DefaultBridgeName("web")
	ghostAlt := state.HostAltName("web", "ghost", "eth0")
	w.plantVeth(bridge, "mcli-ghost", ghostAlt)
	// 3. rules of an attachment nobody holds
	fw, err := firewall.New(firewall.KindNFTables, firewall.Options{NetNS: w.host})
	if err != nil {
		t.Fatal(err)
	}
	fwNet := firewall.Network{Name: "web", Bridge: bridge, Subnets: []*net.IPNet{cidr("10.234.0.0/24")}, IPMasq: true, Isolate: true}
	ghostRule := firewall.Attachment{Network: "web", ContainerID: "ghostfw", IfName: "eth0", IPs: []net.IP{net.ParseIP("10.234.0.250")},
		Ports: []firewall.PortMapping{{HostPort: 18096, ContainerPort: 80, Protocol: "tcp"}}}
	if err := fw.AddAttachment(fwNet, ghostRule); err != nil {
		t.Fatal(err)
	}
	// 4. records while the sidecar is down
	w.plantRecord("named", "10.235.0.1", "10.235.0.0/24", "10.235.0.5")

	out, _, code := w.moor("doctor")
	if code != 3 {
		t.Fatalf("doctor exit %d, want 3:\n%s", code, out)
	}
	planted := []string{
		"held by container " + name(gone) + " (eth0) whose netns " + gone.Path() + " is gone",
		"host veth mcli-ghost (altname " + ghostAlt + ") on bridge " + bridge + " belongs to no attachment",
		"nftables rules of container ghostfw (eth0) belong to no attachment",
		"the DNS sidecar does not answer on " + w.dnsSk + " while the network has 1 record(s)",
	}
	for _, want := range planted {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "-> moor doctor --fix") {
		t.Errorf("no advice in:\n%s", out)
	}

	out, _, code = w.moor("doctor", "--fix")
	if code != 3 || !strings.Contains(out, "fixed: ran the GC of network web") {
		t.Fatalf("doctor --fix: exit %d (the sidecar problem remains, want 3):\n%s", code, out)
	}
	for _, fixed := range planted[:3] {
		if strings.Contains(out, fixed) {
			t.Errorf("still reported after --fix: %q\n%s", fixed, out)
		}
	}
	if !strings.Contains(out, planted[3]) {
		t.Errorf("--fix cannot start the sidecar; its problem must remain:\n%s", out)
	}
	// What the fix did, in the kernel and the stores; the valid container is untouched.
	if w.linkExists("mcli-ghost") {
		t.Error("the planted veth is still there")
	}
	keys, err := fw.Attachments("web")
	if err != nil || len(keys) != 1 || keys[0].ContainerID != name(kept) {
		t.Errorf("rules after --fix: %v %v, want only %s's", keys, err, name(kept))
	}
	if held := w.reservations("web"); len(held) != 1 || !strings.HasPrefix(held[0], name(kept)+"/") {
		t.Errorf("addresses after --fix: %v", held)
	}
	if err := ping(kept, "10.234.0.1"); err != nil {
		t.Errorf("the valid container lost its network: %v", err)
	}

	// A sidecar of another network namespace on the control socket is not the host's: the
	// finding stays, and inspect does not count it as answering.
	stop := w.fakeSidecar(netnsid.ID{Dev: 1, Ino: 1})
	out, _, _ = w.moor("doctor")
	if !strings.Contains(out, "the DNS sidecar does not answer") {
		t.Errorf("a sidecar of another namespace counted as the host's:\n%s", out)
	}
	if insp := w.ok("network", "inspect", "-f", "{{.Live.DNS.Answering}}", "named"); insp != "false\n" {
		t.Errorf("inspect Live.DNS.Answering with a foreign sidecar: %q", insp)
	}
	stop()

	// The host namespace's sidecar answering on the control socket clears the last finding.
	hostID, err := netnsid.Of(w.host.Path())
	if err != nil {
		t.Fatal(err)
	}
	w.fakeSidecar(hostID)
	out, _, _ = w.moor("doctor")
	if strings.Contains(out, "the DNS sidecar does not answer") {
		t.Errorf("sidecar answers, still reported:\n%s", out)
	}
	insp := w.ok("network", "inspect", "-f", "{{.Live.DNS.Answering}} {{.Live.DNS.Records}}", "named")
	if insp != "true 1\n" {
		t.Errorf("inspect Live.DNS: %q", insp)
	}
}

func cidr(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// plantVeth adds a veth on the bridge carrying a moor altname.
func (w *world) plantVeth(bridge, link, alt string) {
	w.t.Helper()
	err := w.host.Do(func(ns.NetNS) error {
		br, err := netlinksafe.LinkByName(bridge)
		if err != nil {
			return err
		}
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: link, MasterIndex: br.Attrs().Index}, PeerName: link + "p"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		return netlink.LinkAddAltName(l, alt)
	})
	if err != nil {
		w.t.Fatalf("planting veth %s: %v", link, err)
	}
}

// plantRecord registers one container record on a network in the DNS store.
func (w *world) plantRecord(network, gateway, subnet, ip string) {
	w.t.Helper()
	st, err := records.NewLocal(w.dnsDir)
	if err != nil {
		w.t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	n := records.Network{Name: network, Gateways: []net.IP{net.ParseIP(gateway)}, Subnets: []*net.IPNet{cidr(subnet)}}
	if err := st.PutNetwork(ctx, n); err != nil {
		w.t.Fatal(err)
	}
	r := records.Record{Network: network, ContainerID: "ghostdns", IfName: "eth0", Names: []string{"ghost"}, IPs: []net.IP{net.ParseIP(ip)}}
	if err := st.Put(ctx, r); err != nil {
		w.t.Fatal(err)
	}
}

// fakeSidecar answers GET /healthz on the world's DNS control socket as a sidecar of the
// network namespace id; the returned function stops it.
func (w *world) fakeSidecar(id netnsid.ID) func() {
	w.t.Helper()
	l, err := net.Listen("unix", w.dnsSk)
	if err != nil {
		w.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(rw, r)
			return
		}
		_ = json.NewEncoder(rw).Encode(server.Health{Status: "ok", Netns: id.String()})
	})}
	go func() { _ = srv.Serve(l) }()
	stop := func() { _ = srv.Close(); _ = os.Remove(w.dnsSk) }
	w.t.Cleanup(stop)
	return stop
}

// reservations lists the keys holding addresses in a network's IPAM store.
func (w *world) reservations(network string) []string {
	w.t.Helper()
	nets, _ := conflist.Load(w.confDir)
	n, err := conflist.Resolve(nets, network)
	if err != nil {
		w.t.Fatal(err)
	}
	atts, err := state.Attachments(context.Background(), n)
	if err != nil {
		w.t.Fatal(err)
	}
	var keys []string
	for _, a := range atts {
		keys = append(keys, a.Key.String())
	}
	return keys
}

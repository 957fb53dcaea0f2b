package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/netnsid"
)

// containerID is a podman-style 64-hex-digit container ID.
func containerID(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// nvWorld is a host (with an uplink to an outside netns and its own DNS sidecar) on which
// moor-netavark runs.
type nvWorld struct {
	*dnsWorld
	nv  *nvDriver
	dns server.Paths // the host namespace's sidecar paths under MOOR_RUN_DIR (w.dir)
}

func newNVWorld(t *testing.T) *nvWorld {
	w := &nvWorld{dnsWorld: newDNSWorld(t)}
	w.nv = newNVDriver(t, w.host, w.dir)
	id, err := netnsid.Of(w.host.Path())
	if err != nil {
		t.Fatal(err)
	}
	w.dns = server.PathsFor(w.dir, id, false)
	t.Cleanup(func() { stopSidecarAt(w.dns.PidFile) })
	return w
}

// network is a network as `podman network create -d moor-bridge` hands it to create.
func (w *nvWorld) network(name, bridge, subnet string, dnsOn bool) map[string]any {
	return map[string]any{
		"name": name, "id": containerID(w.t), "driver": "moor-bridge", "network_interface": bridge,
		"subnets":      []map[string]any{{"subnet": subnet}},
		"ipv6_enabled": false, "internal": false, "dns_enabled": dnsOn,
		"ipam_options": map[string]any{"driver": "host-local", "dataDir": w.dataDir},
	}
}

// gone checks that nothing of network is left on the host: no link but those of before,
// no rule, no address reservation, no DNS record, no cached result.
func (w *nvWorld) gone(t *testing.T, network string, linksBefore []string) {
	t.Helper()
	if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(linksBefore, ",") {
		t.Errorf("host links %v, want those of before the first setup %v", after, linksBefore)
	}
	if a := w.fwAttachments(network); len(a) != 0 {
		t.Errorf("attachment rules left: %v", a)
	}
	if rules := w.ruleset(); strings.Contains(rules, "net="+network) {
		t.Errorf("rules of network %s left:\n%s", network, rules)
	}
	if r := w.reservations(network); len(r) != 0 {
		t.Errorf("addresses left: %v", r)
	}
	st, err := records.NewLocal(w.dns.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if recs, err := st.List(context.Background(), network); err != nil || len(recs) != 0 {
		t.Errorf("DNS records left: %v %v", recs, err)
	}
	nets, _ := st.Networks(context.Background())
	for _, n := range nets {
		if n.Name == network {
			t.Errorf("DNS network %s left", network)
		}
	}
	if cached, _ := filepath.Glob(filepath.Join(w.dir, "netavark", "cache", "results", "*")); len(cached) != 0 {
		t.Errorf("cached results left: %v", cached)
	}
}

// TestNetavarkContainersReachEachOther is podman's path through the plugin, with each
// firewall backend: create the network, set up two containers with the addresses podman
// chose, reach each other by address and by name, publish ports, then tear down (twice,
// and once after the netns is gone) and find nothing left.
func TestNetavarkContainersReachEachOther(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) { nvReachEachOther(t, backend) })
	}
}

func nvReachEachOther(t *testing.T, backend string) {
	w := newNVWorld(t)
	w.backend = backend // what the checks read; the network's option is what moor-bridge uses
	linksBefore := w.hostLinks()
	in := w.network("nvweb", "mnv0", "10.231.0.0/24", true)
	in["options"] = map[string]any{"firewallBackend": backend}
	network, err := w.nv.create(in)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if subnets, _ := network["subnets"].([]any); len(subnets) != 1 || subnets[0].(map[string]any)["gateway"] != "10.231.0.1" {
		t.Fatalf("create did not complete the gateway: %v", network)
	}

	webNS := plugintestNetns(t)
	web := nvRequest{id: containerID(t), name: "web", ips: []string{"10.231.0.10"}, mac: "aa:bb:cc:dd:aa:01",
		ports: []map[string]any{
			{"container_port": 80, "host_ip": "", "host_port": 18480, "protocol": "tcp", "range": 1},
			{"container_port": 81, "host_ip": "", "host_port": 18481, "protocol": "tcp", "range": 2},
		}}
	web.aliases = []string{web.id[:12], "frontend"}
	st, err := w.nv.setup(webNS.Path(), web.body(network))
	if err != nil {
		t.Fatalf("setup web: %v", err)
	}
	eth0, ok := st.Interfaces["eth0"]
	if !ok || eth0.MACAddress != "aa:bb:cc:dd:aa:01" || len(eth0.Subnets) != 1 ||
		eth0.Subnets[0].IPNet != "10.231.0.10/24" || eth0.Subnets[0].Gateway != "10.231.0.1" {
		t.Errorf("status block %+v", st)
	}
	if strings.Join(st.DNSServerIPs, ",") != "10.231.0.1" || strings.Join(st.DNSSearchDomains, ",") != "dns.moor" {
		t.Errorf("status DNS: servers %v search %v", st.DNSServerIPs, st.DNSSearchDomains)
	}
	dbNS := plugintestNetns(t)
	db := nvRequest{id: containerID(t), name: "db", ips: []string{"10.231.0.11"}}
	if _, err := w.nv.setup(dbNS.Path(), db.body(network)); err != nil {
		t.Fatalf("setup db: %v", err)
	}

	// By address, and by name through the gateway.
	if err := ping(webNS, "10.231.0.11"); err != nil {
		t.Error(err)
	}
	gw := "10.231.0.1"
	wantA(t, dbNS, gw, "web", "10.231.0.10")
	wantA(t, dbNS, gw, "frontend", "10.231.0.10")
	wantA(t, dbNS, gw, web.id[:12], "10.231.0.10") // podman's short-ID alias, once
	wantA(t, dbNS, gw, "web.dns.moor", "10.231.0.10")
	if ips, _, err := lookup(webNS, gw, "db", 2*time.Second); err != nil || len(ips) != 1 {
		t.Errorf("web resolving db: %v %v", ips, err)
	} else if err := ping(webNS, ips[0]); err != nil {
		t.Errorf("web pinging db by name: %v", err)
	}

	// Published ports, from another host; a range maps port by port.
	for _, port := range []string{"80", "81", "82"} {
		serveTCP(t, webNS, ":"+port)
	}
	for _, hostPort := range []string{"18480", "18481", "18482"} {
		if _, err := dialTCP(w.outside, hostUplinkIP+":"+hostPort); err != nil {
			t.Errorf("published port %s: %v", hostPort, err)
		}
	}

	// web leaves: its name, ports and address go; a second teardown is fine.
	if err := w.nv.teardown(webNS.Path(), web.body(network)); err != nil {
		t.Fatalf("teardown web: %v", err)
	}
	if _, rcode, _ := lookup(dbNS, gw, "web.dns.moor", 2*time.Second); rcode != dns.RcodeNameError {
		t.Errorf("after teardown web resolves (rcode %d)", rcode)
	}
	if _, err := dialTCP(w.outside, hostUplinkIP+":18480"); err == nil {
		t.Error("the published port still answers after teardown")
	}
	if err := w.nv.teardown(webNS.Path(), web.body(network)); err != nil {
		t.Errorf("second teardown: %v", err)
	}
	if n := w.bridgePorts("mnv0"); n != 1 {
		t.Errorf("bridge ports %d, want db's only", n)
	}

	// db, the last container, leaves after its netns is gone: the network goes with it.
	dbGone, err := plugintestNamed("moorit-nvgone")
	if err != nil {
		t.Fatal(err)
	}
	db2 := nvRequest{id: containerID(t), name: "db2"}
	if _, err := w.nv.setup(dbGone.Path(), db2.body(network)); err != nil {
		deleteNetns(dbGone)
		t.Fatalf("setup db2: %v", err)
	}
	deleteNetns(dbGone)
	for _, c := range []struct {
		netns string
		req   nvRequest
	}{{dbNS.Path(), db}, {dbGone.Path(), db2}, {dbGone.Path(), db2}} {
		if err := w.nv.teardown(c.netns, c.req.body(network)); err != nil {
			t.Errorf("teardown %s: %v", c.req.name, err)
		}
	}
	w.gone(t, "nvweb", linksBefore)
}

// TestNetavarkFailedSetupLeavesNothing: moor-dns refuses an alias after moor-bridge has
// attached the container; the plugin undoes the attachment before it reports the error,
// so the address is free again and no link or rule is left.
func TestNetavarkFailedSetupLeavesNothing(t *testing.T) {
	w := newNVWorld(t)
	linksBefore := w.hostLinks()
	network, err := w.nv.create(w.network("nvfail", "mnv1", "10.232.0.0/24", true))
	if err != nil {
		t.Fatal(err)
	}
	ctr := plugintestNetns(t)
	bad := nvRequest{id: containerID(t), name: "api", ips: []string{"10.232.0.5"}, aliases: []string{"bad name"},
		ports: []map[string]any{{"container_port": 80, "host_ip": "", "host_port": 18490, "protocol": "tcp", "range": 1}}}
	_, err = w.nv.setup(ctr.Path(), bad.body(network))
	wantNVError(t, err, "bad name")
	wantNVError(t, err, "(CNI code 7)")
	w.gone(t, "nvfail", linksBefore) // it was the only container: the network went too

	good := bad
	good.aliases = []string{"api-v1"}
	if _, err := w.nv.setup(ctr.Path(), good.body(network)); err != nil {
		t.Fatalf("setup with the same address after the failure: %v", err)
	}
	if err := w.nv.teardown(ctr.Path(), good.body(network)); err != nil {
		t.Fatal(err)
	}
	w.gone(t, "nvfail", linksBefore)
}

// TestNetavarkMoorAllocates: without static_ips (ipam driver moor-ipam, which tells
// podman to leave allocation to moor) moor-ipam chooses from the lease range, keeps its
// store under the state directory, and refuses when the range is full.
func TestNetavarkMoorAllocates(t *testing.T) {
	w := newNVWorld(t)
	network := w.network("nvpool", "mnv2", "10.233.0.0/24", false)
	network["ipam_options"] = map[string]any{"driver": "moor-ipam"}
	network["subnets"] = []map[string]any{{"subnet": "10.233.0.0/24", "lease_range": map[string]any{"start_ip": "10.233.0.100", "end_ip": "10.233.0.101"}}}
	network, err := w.nv.create(network)
	if err != nil {
		t.Fatal(err)
	}
	if ipam, _ := network["ipam_options"].(map[string]any); ipam["driver"] != "moor-ipam" {
		t.Fatalf("create changed the ipam driver: %v", network)
	}
	var got []string
	var reqs []nvRequest
	var nss []ns.NetNS
	for i := 0; i < 2; i++ {
		ctr := plugintestNetns(t)
		req := nvRequest{id: containerID(t), name: "c" + string(rune('a'+i))}
		st, err := w.nv.setup(ctr.Path(), req.body(network))
		if err != nil {
			t.Fatalf("setup %d: %v", i, err)
		}
		got = append(got, st.Interfaces["eth0"].Subnets[0].IPNet)
		reqs, nss = append(reqs, req), append(nss, ctr)
	}
	if strings.Join(got, ",") != "10.233.0.100/24,10.233.0.101/24" {
		t.Errorf("addresses %v, want the lease range's two", got)
	}
	if err := ping(nss[0], "10.233.0.101"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "netavark", "ipam", "nvpool.db")); err != nil {
		t.Errorf("moor-ipam's store is not under the state directory: %v", err)
	}
	full := nvRequest{id: containerID(t), name: "cc"}
	_, err = w.nv.setup(plugintestNetns(t).Path(), full.body(network))
	wantNVError(t, err, "(CNI code 100)")
	for i, req := range reqs {
		if err := w.nv.teardown(nss[i].Path(), req.body(network)); err != nil {
			t.Error(err)
		}
	}
}

// TestNetavarkMacvlan: a moor-macvlan network on a parent link of the host; two
// containers reach each other through it, and teardown leaves the parent alone.
func TestNetavarkMacvlan(t *testing.T) {
	w := newNVWorld(t)
	err := w.host.Do(func(ns.NetNS) error {
		if out, err := execOut("ip", "link", "add", "mnvpar0", "type", "veth", "peer", "name", "mnvpeer0"); err != nil {
			return &nvError{Msg: string(out)}
		}
		for _, l := range []string{"mnvpar0", "mnvpeer0"} {
			if out, err := execOut("ip", "link", "set", l, "up"); err != nil {
				return &nvError{Msg: string(out)}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	linksBefore := w.hostLinks()
	network, err := w.nv.create(map[string]any{
		"name": "nvlan", "id": containerID(t), "driver": "moor-macvlan", "network_interface": "mnvpar0",
		"subnets": []map[string]any{{"subnet": "10.234.0.0/24"}}, "ipv6_enabled": false, "internal": false, "dns_enabled": false,
		"ipam_options": map[string]any{"dataDir": w.dataDir}, "options": map[string]any{"mode": "bridge"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if network["network_interface"] != "mnvpar0" {
		t.Errorf("create changed the parent: %v", network)
	}
	a, b := plugintestNetns(t), plugintestNetns(t)
	ra, rb := nvRequest{id: containerID(t), name: "a", ips: []string{"10.234.0.2"}}, nvRequest{id: containerID(t), name: "b", ips: []string{"10.234.0.3"}}
	for _, c := range []struct {
		netns ns.NetNS
		req   nvRequest
	}{{a, ra}, {b, rb}} {
		st, err := w.nv.setup(c.netns.Path(), c.req.body(network))
		if err != nil {
			t.Fatalf("setup %s: %v", c.req.name, err)
		}
		if len(st.DNSServerIPs) != 0 || st.Interfaces["eth0"].MACAddress == "" {
			t.Errorf("status %+v", st)
		}
	}
	if err := ping(a, "10.234.0.3"); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		netns ns.NetNS
		req   nvRequest
	}{{a, ra}, {b, rb}} {
		if err := w.nv.teardown(c.netns.Path(), c.req.body(network)); err != nil {
			t.Error(err)
		}
		if l := linkIn(t, c.netns, "eth0"); l != nil {
			t.Errorf("eth0 left in %s", c.req.name)
		}
	}
	if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(linksBefore, ",") {
		t.Errorf("host links %v, want %v", after, linksBefore)
	}
	if r := w.reservations("nvlan"); len(r) != 0 {
		t.Errorf("addresses left: %v", r)
	}
}

// TestNetavarkCreateAndInfo: info answers; create picks a subnet that neither a route of
// the host nor another podman network holds, keeps what podman stored, and refuses a bad
// subnet with the error object.
func TestNetavarkCreateAndInfo(t *testing.T) {
	w := newNVWorld(t)
	out, err := w.nv.run(nil, "info")
	var info map[string]string
	if err != nil || strictDecode(out, &info) != nil || info["api_version"] != "1.0.0" || info["version"] != "itest" {
		t.Errorf("info: %v %q", err, out)
	}
	podmanDir := filepath.Join(w.dir, "podman-networks")
	if err := os.MkdirAll(podmanDir, 0o755); err != nil {
		t.Fatal(err)
	}
	other := `{"name":"other","id":"1","driver":"bridge","subnets":[{"subnet":"10.89.1.0/24","gateway":"10.89.1.1"}]}`
	if err := os.WriteFile(filepath.Join(podmanDir, "other.json"), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	err = w.host.Do(func(ns.NetNS) error {
		_, err := execOut("ip", "route", "add", "10.89.0.0/24", "via", outsideIP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{"name": "nvauto", "id": containerID(t), "driver": "moor-bridge", "ipv6_enabled": false,
		"internal": false, "dns_enabled": true, "labels": map[string]any{"team": "a"}, "created": "2024-05-01T10:00:00Z"}
	n, err := w.nv.create(in)
	if err != nil {
		t.Fatal(err)
	}
	subnets, _ := n["subnets"].([]any)
	if len(subnets) != 1 || subnets[0].(map[string]any)["subnet"] != "10.89.2.0/24" {
		t.Errorf("subnets %v, want 10.89.2.0/24 (10.89.0.0/24 is routed, 10.89.1.0/24 podman's)", n["subnets"])
	}
	for _, k := range []string{"name", "id", "driver", "created"} {
		if n[k] != in[k] {
			t.Errorf("%s: %v, want %v unchanged", k, n[k], in[k])
		}
	}
	if labels, _ := n["labels"].(map[string]any); labels["team"] != "a" {
		t.Errorf("labels lost: %v", n)
	}
	in["subnets"] = []map[string]any{{"subnet": "10.0.0.0/33"}}
	_, err = w.nv.create(in)
	wantNVError(t, err, "10.0.0.0/33")
}

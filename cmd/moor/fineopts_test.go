package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/cmd/moor/internal/view"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// TestNetworkFineOptions: through the CLI and the real plugin, icc=false turns
// br_netfilter on for the bridge (or, in a kernel without it, isolates the containers'
// bridge ports) and keeps containers apart while the gateway answers; a
// host binding of 127.0.0.1 publishes a port without hostIP on loopback only; inspect
// shows the options; a bad value is refused naming it.
func TestNetworkFineOptions(t *testing.T) {
	w := newWorld(t)
	w.ok("network", "create", "--disable-dns", "--subnet", "10.233.0.0/24", "--ipam-opt", "dataDir="+w.dataDir,
		"-o", "com.docker.network.bridge.enable_icc=false", "-o", "com.docker.network.bridge.host_binding_ipv4=127.0.0.1", "fine")
	c1, c2 := w.container(), w.container()
	w.ok("network", "connect", "-p", "18097:80", "fine", name(c1))
	w.ok("network", "connect", "fine", name(c2))
	plugintest.ServeTCP(t, c1, ":80")
	bridge := conflist.DefaultBridgeName("fine")
	brnf, err := firewall.BridgeNetfilterPresent(w.host)
	if err != nil {
		t.Fatal(err)
	}
	wantIsolated := map[bool]int{true: 0, false: 2}[brnf]
	if got := strings.Count(w.inHost("bridge", "-d", "link", "show", "master", bridge), "isolated on"); got != wantIsolated {
		t.Errorf("%d isolated ports on %s, want %d (br_netfilter: %v):\n%s", got, bridge, wantIsolated, brnf, w.inHost("bridge", "-d", "link", "show"))
	}
	if details := w.inHost("ip", "-d", "link", "show", bridge); brnf && (!strings.Contains(details, "nf_call_iptables 1") || !strings.Contains(details, "nf_call_ip6tables 1")) {
		t.Errorf("br_netfilter is there but not on for %s:\n%s", bridge, details)
	}
	if err := ping(c2, "10.233.0.1"); err != nil {
		t.Errorf("icc=false: the gateway does not answer: %v", err)
	}
	if err := ping(c2, "10.233.0.2"); err == nil {
		t.Error("icc=false: one container reached the other")
	}
	if got, err := plugintest.DialTCP(w.host, "127.0.0.1:18097", 2*time.Second); err != nil || got != "10.233.0.1" {
		t.Errorf("host to 127.0.0.1:18097: %q, %v", got, err)
	}
	if got, err := plugintest.DialTCP(w.host, "10.233.0.1:18097", 2*time.Second); err == nil {
		t.Errorf("the port bound to 127.0.0.1 answered on the host's other address: %q", got)
	}

	var docs []view.Inspect
	if err := json.Unmarshal([]byte(w.ok("network", "inspect", "fine")), &docs); err != nil || len(docs) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	if o := docs[0].Options; o["icc"] != "false" || o["hostBindingIPv4"] != "127.0.0.1" {
		t.Errorf("inspect options %v", o)
	}
	// An isolated gateway mode: no address on the bridge, no route out, containers
	// still reach each other.
	// DNS is off by default there (the server would listen on the gateway).
	w.ok("network", "create", "--subnet", "10.234.0.0/24", "--ipam-opt", "dataDir="+w.dataDir,
		"-o", "gatewayModeIPv4=isolated", "iso")
	i1, i2 := w.container(), w.container()
	w.ok("network", "connect", "iso", name(i1))
	w.ok("network", "connect", "iso", name(i2))
	if addrs := w.inHost("ip", "-4", "-o", "addr", "show", "dev", conflist.DefaultBridgeName("iso")); strings.TrimSpace(addrs) != "" {
		t.Errorf("isolated: the bridge has an address: %s", addrs)
	}
	if err := ping(i1, "10.234.0.3"); err != nil {
		t.Errorf("isolated: containers do not reach each other: %v", err)
	}
	if err := ping(i1, "10.234.0.1"); err == nil {
		t.Error("isolated: something answered on the gateway address")
	}
	w.ok("network", "rm", "-f", "iso")
	w.fails(2, "gatewayModeIPv4=bridged", "network", "create", "-o", "gatewayModeIPv4=bridged", "bad")
	w.ok("network", "rm", "-f", "fine")
}

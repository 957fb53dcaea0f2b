package integration

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// labICC: two hosts, two overlay networks every container is on: ovicc with icc false,
// ovopen as it comes (the same containers and hosts, so what ovopen delivers and ovicc
// does not is the option's doing).
const labICC = `
underlay: 172.31.9.0/24
agent: {resync: 2s}
networks:
  - {name: ovicc, subnet: 10.243.0.0/16, hostSubnetLen: 24, vni: 43, ipMasq: true, icc: false}
  - {name: ovopen, subnet: 10.244.0.0/16, hostSubnetLen: 24, vni: 44, ipMasq: true}
hosts:
  - {name: h1, containers: [a1, a2]}
  - {name: h2, containers: [b1]}
`

// TestOverlayNoICC: on an overlay network with icc false no container reaches another,
// on the same host (switched by the bridge) or across hosts (through the VXLAN device),
// in either direction; each still reaches its gateway and the outside (masqueraded),
// and the hosts still reach the containers, their own and the other host's. On the
// network without the option the same pairs reach each other.
func TestOverlayNoICC(t *testing.T) {
	l := upLab(t, labICC)
	ip := func(container, network string) netip.Addr {
		t.Helper()
		c, err := l.Container(container)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range c.Attachments {
			if a.Network == network {
				return netip.MustParseAddr(a.IP)
			}
		}
		t.Fatalf("%s has no address on %s", container, network)
		return netip.Addr{}
	}
	gateway := func(container, network string) netip.Addr {
		c, _ := l.Container(container)
		for _, a := range c.Attachments {
			if a.Network == network {
				return netip.MustParseAddr(a.Gateway)
			}
		}
		return netip.Addr{}
	}
	pairs := [][2]string{{"a1", "a2"}, {"a2", "a1"}, {"a1", "b1"}, {"b1", "a1"}, {"a2", "b1"}, {"b1", "a2"}}
	// The open network first: once its pairs answer, the overlay has converged.
	for _, p := range pairs {
		to := ip(p[1], "ovopen")
		if waitUntil(ovConverge, func() bool { return l.Ping(p[0], to) == nil }) != nil {
			t.Fatalf("ovopen: %s does not reach %s (%s): the rig proves nothing", p[0], p[1], to)
		}
	}
	for _, p := range pairs {
		if err := l.Ping(p[0], ip(p[1], "ovicc")); err == nil {
			t.Errorf("icc false: %s reached %s (%s)", p[0], p[1], ip(p[1], "ovicc"))
		}
	}
	for _, c := range []string{"a1", "a2", "b1"} {
		if err := l.Ping(c, gateway(c, "ovicc")); err != nil {
			t.Errorf("icc false: %s does not reach its gateway: %v", c, err)
		}
		if err := l.Ping(c, netip.MustParseAddr(l.Router)); err != nil {
			t.Errorf("icc false: %s does not reach the outside: %v", c, err)
		}
	}
	for _, h := range []struct{ host, container string }{{"h1", "a1"}, {"h2", "a1"}, {"h1", "b1"}, {"h2", "b1"}} {
		if err := l.PingFromHost(h.host, ip(h.container, "ovicc")); err != nil {
			t.Errorf("icc false: host %s does not reach %s: %v", h.host, h.container, err)
		}
	}
	h1, _ := l.Host("h1")
	rules, err := exec.Command("ip", "netns", "exec", filepath.Base(h1.Netns), "nft", "list", "chain", "ip", "moor-overlay", "forward").CombinedOutput()
	if err != nil || !strings.Contains(string(rules), "moor-overlay net=ovicc") || strings.Contains(string(rules), "net=ovopen") {
		t.Errorf("h1's forward chain (%v):\n%s", err, rules)
	}
}

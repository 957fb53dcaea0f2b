package integration

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/lab"
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
		return netip.MustParseAddr(attachmentOn(t, l, container, network).IP)
	}
	gateway := func(container, network string) netip.Addr {
		return netip.MustParseAddr(attachmentOn(t, l, container, network).Gateway)
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
	// What still works is checked with a generous deadline (single echoes get lost on a
	// loaded machine); what must not, with a single echo each (it cannot pass by chance).
	for _, c := range []string{"a1", "a2", "b1"} {
		if err := waitUntil(ovConverge, func() bool { return l.Ping(c, gateway(c, "ovicc")) == nil }); err != nil {
			t.Errorf("icc false: %s does not reach its gateway: %v", c, err)
		}
		if err := waitUntil(ovConverge, func() bool { return l.Ping(c, netip.MustParseAddr(l.Router)) == nil }); err != nil {
			t.Errorf("icc false: %s does not reach the outside: %v", c, err)
		}
	}
	for _, h := range []struct{ host, container string }{{"h1", "a1"}, {"h2", "a1"}, {"h1", "b1"}, {"h2", "b1"}} {
		if err := waitUntil(ovConverge, func() bool { return l.PingFromHost(h.host, ip(h.container, "ovicc")) == nil }); err != nil {
			t.Errorf("icc false: host %s does not reach %s: %v", h.host, h.container, err)
		}
	}
	h1, _ := l.Host("h1")
	rules, err := exec.Command("ip", "netns", "exec", filepath.Base(h1.Netns), "nft", "list", "chain", "ip", "moor-overlay", "forward").CombinedOutput()
	if err != nil || !strings.Contains(string(rules), "moor-overlay net=ovicc") || strings.Contains(string(rules), "net=ovopen") {
		t.Errorf("h1's forward chain (%v):\n%s", err, rules)
	}
}

// labInternal: two hosts; ovint is internal, ovout is not (and neither masquerades), on
// the same containers, so what ovout lets through and ovint does not is the option's
// doing. The lab's router gets routes to both ranges via h1 (so it could answer a1, and
// reach it, if nothing stopped the packets); ovout comes first, so the containers'
// default route is ovout's.
const labInternal = `
underlay: 172.31.11.0/24
agent: {resync: 2s}
networks:
  - {name: ovout, subnet: 10.246.0.0/16, hostSubnetLen: 24, vni: 46}
  - {name: ovint, subnet: 10.245.0.0/16, hostSubnetLen: 24, vni: 45, internal: true}
hosts:
  - {name: h1, containers: [a1]}
  - {name: h2, containers: [b1]}
`

// TestOverlayInternal: on an internal overlay network nothing is forwarded between the
// containers and the outside, either way, while containers reach each other across
// hosts (both ways), their gateway, and their host reaches them.
func TestOverlayInternal(t *testing.T) {
	l := upLab(t, labInternal)
	h1, _ := l.Host("h1")
	for _, r := range []string{"10.245.0.0/16", "10.246.0.0/16"} {
		if err := execIn(l.State.Netns, "ip", "route", "add", r, "via", h1.Underlay); err != nil {
			t.Fatal(err)
		}
	}
	att := func(container, network string) lab.Attachment { return attachmentOn(t, l, container, network) }
	router := netip.MustParseAddr(l.Router)
	a1out := netip.MustParseAddr(att("a1", "ovout").IP)
	if err := waitUntil(ovConverge, func() bool { return l.Ping("a1", router) == nil }); err != nil {
		t.Fatalf("ovout: a1 does not reach the router: the rig proves nothing")
	}
	if err := waitUntil(ovConverge, func() bool { return l.PingFromLab(a1out) == nil }); err != nil {
		t.Fatalf("ovout: the router does not reach a1 (%s): the rig proves nothing", a1out)
	}
	a1, b1 := att("a1", "ovint"), att("b1", "ovint")
	// a1 sends to the router through ovint's gateway.
	c, err := l.Container("a1")
	if err != nil {
		t.Fatal(err)
	}
	if err := execIn(c.Netns, "ip", "route", "add", l.Router+"/32", "via", a1.Gateway); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping("a1", router); err == nil {
		t.Error("internal: a1 reached the router through ovint")
	}
	if err := l.PingFromLab(netip.MustParseAddr(a1.IP)); err == nil {
		t.Error("internal: the router reached a1 on ovint")
	}
	for _, p := range []struct{ from, to string }{{"a1", b1.IP}, {"b1", a1.IP}, {"a1", a1.Gateway}} {
		to := netip.MustParseAddr(p.to)
		if err := waitUntil(ovConverge, func() bool { return l.Ping(p.from, to) == nil }); err != nil {
			t.Errorf("internal: %s does not reach %s", p.from, p.to)
		}
	}
	if err := waitUntil(ovConverge, func() bool { return l.PingFromHost("h1", netip.MustParseAddr(a1.IP)) == nil }); err != nil {
		t.Errorf("internal: h1 does not reach a1: %v", err)
	}
}

// attachmentOn is the container's attachment to network.
func attachmentOn(t *testing.T, l *lab.Lab, container, network string) lab.Attachment {
	t.Helper()
	c, err := l.Container(container)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Attachments {
		if a.Network == network {
			return a
		}
	}
	t.Fatalf("%s has no address on %s", container, network)
	return lab.Attachment{}
}

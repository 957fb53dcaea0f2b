package firewall

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/codes"
)

// serveTag listens on addr (tcp and udp) inside n and answers every connection or
// datagram with tag, so a test tells which server answered.
func serveTag(t *testing.T, n ns.NetNS, addr, tag string) {
	t.Helper()
	serveReplies(t, n, addr, func(net.Addr) string { return tag })
}

func expectTag(t *testing.T, what string, n ns.NetNS, network, addr, want string) {
	t.Helper()
	got, err := ask(n, network, addr, reachTimeout)
	if err != nil || got != want {
		t.Fatalf("%s: %s %s answered %q (%v), want %q", what, network, addr, got, err, want)
	}
}

func expectCode(t *testing.T, what string, err error, code uint, mentions ...string) {
	t.Helper()
	var coded codes.Coded
	if !errors.As(err, &coded) || coded.CNICode() != code {
		t.Fatalf("%s: got %v, want code %d", what, err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("%s: %q does not mention %q", what, err, m)
		}
	}
}

// TestHostPortInUseRefused: a port a host process listens on (TCP listening, UDP bound)
// is refused with code 103 naming the port, the socket and the process, before anything
// changes; a mapping on another address than the socket's is accepted.
func TestHostPortInUseRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("busy", nil)
		c := l.addContainer(n, "c1")
		serveWhoami(t, c.ns, whoamiPort)
		serveTag(t, l.host, "127.0.0.1:9999", "host-lo")       // tcp and udp on loopback only
		serveTag(t, l.host, "[::]:9998", "host-any")           // dual-stack wildcard
		serveTag(t, l.host, hostPort(n.gw4, 9997), "host-gw4") // one address
		self := fmt.Sprintf("pid %d", os.Getpid())
		for _, tc := range []struct {
			name string
			pm   PortMapping
			says string
		}{
			{"tcp on 127.0.0.1, mapping on every address", PortMapping{HostPort: 9999, ContainerPort: whoamiPort}, "127.0.0.1:9999"},
			{"udp on 127.0.0.1", PortMapping{HostPort: 9999, ContainerPort: whoamiPort, Protocol: "udp"}, "udp socket on 127.0.0.1:9999"},
			{"explicit 127.0.0.1", PortMapping{HostPort: 9999, ContainerPort: whoamiPort, HostIP: "127.0.0.1"}, "127.0.0.1:9999"},
			{"[::] holds IPv4 too", PortMapping{HostPort: 9998, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()}, "[::]:9998"},
			{"[::] holds IPv6", PortMapping{HostPort: 9998, ContainerPort: whoamiPort, HostIP: hostOut6.IP.String()}, "[::]:9998"},
			{"one address, mapping on every address", PortMapping{HostPort: 9997, ContainerPort: whoamiPort}, n.gw4.String() + ":9997"},
		} {
			err := l.fw.AddAttachment(n.Network, c.attachment(tc.pm))
			expectCode(t, tc.name, err, codes.PortInUse, tc.says, self, "already in use on the host")
		}
		if k := attachmentRuleCount(t, l, c.attachment().Key()); k != 0 {
			t.Fatalf("refused ADDs left %d rules", k)
		}
		expectTag(t, "host service after the refusals", l.host, "tcp", "127.0.0.1:9999", "host-lo")
		// Another address than the socket's is free.
		l.publish(c, PortMapping{HostPort: 9997, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()})
		expectSeenAs(t, "published beside a host socket", l.outside, "tcp", hostPort(hostOut4.IP, 9997), outside4.IP)
		expectTag(t, "the host socket keeps its address", l.host, "tcp", hostPort(n.gw4, 9997), "host-gw4")
	})
}

// TestHostPortReservedByCaller: a host socket held by one of Options.PortReservers (the
// calling runtime, which reserved the port: podman 5 does) is not a conflict, and the
// mapping works; with reservers that do not hold it, the socket still is a conflict.
func TestHostPortReservedByCaller(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("resv", nil)
		c := l.addContainer(n, "c1")
		serveWhoami(t, c.ns, whoamiPort)
		serveTag(t, l.host, hostPort(n.gw4, 9996), "runtime-reservation")
		pm := PortMapping{HostPort: 9996, ContainerPort: whoamiPort}
		others, err := New(l.fw.Name(), Options{NetNS: l.host, LockFile: filepath.Join(t.TempDir(), "fw.lock"), PortReservers: []int{1}})
		must(t, "backend with other reservers", err)
		err = others.AddAttachment(n.Network, c.attachment(pm))
		expectCode(t, "a socket of a process the caller does not name", err, codes.PortInUse, "9996", fmt.Sprintf("pid %d", os.Getpid()))
		mine, err := New(l.fw.Name(), Options{NetNS: l.host, LockFile: filepath.Join(t.TempDir(), "fw.lock"), PortReservers: []int{1, os.Getpid()}})
		must(t, "backend with this process as reserver", err)
		must(t, "publish over the caller's reservation", mine.AddAttachment(n.Network, c.attachment(pm)))
		expectSeenAs(t, "published over the caller's own reservation", l.outside, "tcp", hostPort(hostOut4.IP, 9996), outside4.IP)
	})
}

// TestLoopbackNotTranslated: a mapping without hostIP does not translate the host's
// loopback (127.0.0.1, ::1). A host service that started listening on loopback after
// the port was published keeps answering there, while other hosts reach the container.
func TestLoopbackNotTranslated(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("lo", nil)
		c := l.addContainer(n, "c1")
		serveTag(t, c.ns, "[::]:9999", "container")
		l.publish(c, PortMapping{HostPort: 9999, ContainerPort: 9999}, PortMapping{HostPort: 9999, ContainerPort: 9999, Protocol: "udp"})
		serveTag(t, l.host, "127.0.0.1:9999", "host-lo4")
		serveTag(t, l.host, "[::1]:9999", "host-lo6")
		for _, proto := range []string{"tcp", "udp"} {
			expectTag(t, "host to 127.0.0.1", l.host, proto, "127.0.0.1:9999", "host-lo4")
			expectTag(t, "host to ::1", l.host, proto, "[::1]:9999", "host-lo6")
			expectTag(t, "outside to the host v4", l.outside, proto, hostPort(hostOut4.IP, 9999), "container")
			expectTag(t, "outside to the host v6", l.outside, proto, hostPort(hostOut6.IP, 9999), "container")
			expectTag(t, "host to its own address", l.host, proto, hostPort(hostOut4.IP, 9999), "container")
		}
		// The opt-in (the bridge config's publishLoopback) adds 127.0.0.1.
		c2 := l.addContainer(n, "c2")
		serveTag(t, c2.ns, "[::]:9990", "opted-in")
		a := c2.attachment(PortMapping{HostPort: 9990, ContainerPort: 9990})
		a.LoopbackToo = true
		must(t, "AddAttachment LoopbackToo", l.fw.AddAttachment(n.Network, a))
		expectTag(t, "opt-in, host to 127.0.0.1", l.host, "tcp", "127.0.0.1:9990", "opted-in")
		expectTag(t, "opt-in, outside", l.outside, "tcp", hostPort(hostOut4.IP, 9990), "opted-in")
	})
}

// TestGatewayDNSNotHijacked: a container that publishes 53 (tcp and udp, no hostIP)
// takes no DNS traffic meant for any network's gateway: the DNS server on another
// network's gateway keeps answering its own containers, the host, and IPv6; queries to
// other host addresses reach the container. Publishing 53 while the DNS server listens
// is refused outright.
func TestGatewayDNSNotHijacked(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		dnsNet := l.addNetwork("dnsnet", nil)
		evil := l.addNetwork("evil", nil)
		victim := l.addContainer(dnsNet, "v1")
		attacker := l.addContainer(evil, "e1")
		serveTag(t, attacker.ns, "[::]:53", "attacker")
		l.publish(attacker, PortMapping{HostPort: dnsPort, ContainerPort: dnsPort, Protocol: "udp"},
			PortMapping{HostPort: dnsPort, ContainerPort: dnsPort, Protocol: "tcp"})
		serveTag(t, l.host, hostPort(dnsNet.gw4, dnsPort), "dns4")
		serveTag(t, l.host, hostPort(dnsNet.gw6, dnsPort), "dns6")
		for _, proto := range []string{"udp", "tcp"} {
			expectTag(t, "own container to its gateway", victim.ns, proto, hostPort(dnsNet.gw4, dnsPort), "dns4")
			expectTag(t, "own container to its gateway v6", victim.ns, proto, hostPort(dnsNet.gw6, dnsPort), "dns6")
			expectTag(t, "host to the gateway", l.host, proto, hostPort(dnsNet.gw4, dnsPort), "dns4")
			expectTag(t, "outside to the host", l.outside, proto, hostPort(hostOut4.IP, dnsPort), "attacker")
		}
		// With the DNS server up, publishing 53 on every address is refused.
		err := l.fw.AddAttachment(evil.Network, attacker.attachment(PortMapping{HostPort: dnsPort, ContainerPort: dnsPort, Protocol: "udp"}))
		expectCode(t, "publish 53 over a gateway's DNS", err, codes.PortInUse, dnsNet.gw4.String()+":53")
	})
}

// TestRoutedAccessOnlyThroughPublishedPorts: a neighbour that routes the container
// subnets via the host reaches a container only through its published ports; not its
// unpublished ports, not a port published on 127.0.0.1 only, not even the container port
// of a published mapping directly. Containers, the host and containers' outbound
// traffic are unaffected. Network.Routed opens direct access.
func TestRoutedAccessOnlyThroughPublishedPorts(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("routed", nil)
		c1, c2 := l.addContainer(n, "c1"), l.addContainer(n, "c2")
		const sshPort = 22
		serveWhoami(t, c1.ns, whoamiPort)
		serveWhoami(t, c1.ns, sshPort)
		serveWhoami(t, l.outside, outsidePort)
		l.publish(c1, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort},
			PortMapping{HostPort: pubPortHost, ContainerPort: sshPort, HostIP: "127.0.0.1"})
		routeSubnetsVia(t, l)

		for _, v := range []struct {
			fam         string
			host, ctr   net.IP
			outsideAddr net.IP
		}{{"v4", hostOut4.IP, c1.ip4, outside4.IP}, {"v6", hostOut6.IP, c1.ip6, outside6.IP}} {
			expectSeenAs(t, v.fam+" published port", l.outside, "tcp", hostPort(v.host, pubPort), v.outsideAddr)
			expectBlocked(t, v.fam+" unpublished port", l.outside, hostPort(v.ctr, sshPort))
			expectBlocked(t, v.fam+" container port of a published mapping", l.outside, hostPort(v.ctr, whoamiPort))
			expectRefused(t, v.fam+" 127.0.0.1-only port on the host address", l.outside, hostPort(v.host, pubPortHost))
		}
		expectSeenAs(t, "host to an unpublished port", l.host, "tcp", hostPort(c1.ip4, sshPort), n.gw4)
		expectSeenAs(t, "same network", c2.ns, "tcp", hostPort(c1.ip4, sshPort), c2.ip4)
		expectSeenAs(t, "outbound", c1.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)

		n.Routed = true
		must(t, "EnsureNetwork routed", l.fw.EnsureNetwork(n.Network))
		expectSeenAs(t, "routed mode v4", l.outside, "tcp", hostPort(c1.ip4, sshPort), outside4.IP)
		expectSeenAs(t, "routed mode v6", l.outside, "tcp", hostPort(c1.ip6, sshPort), outside6.IP)
	})
}

// routeSubnetsVia gives the outside netns routes to the labs' container subnets via the
// host.
func routeSubnetsVia(t *testing.T, l *lab) {
	t.Helper()
	h := handleAt(t, l.outside)
	eth, err := h.LinkByName(ctrLink)
	must(t, "find outside link", err)
	must(t, "route v4", h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: mustCIDR("10.10.0.0/16"), Gw: hostOut4.IP}))
	must(t, "route v6", h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: mustCIDR("fd10::/16"), Gw: hostOut6.IP}))
}

// TestBridgeMoveRefused: a network cannot move to another bridge while its old bridge
// has containers (code 7 naming both bridges); the old bridge stays isolated.
func TestBridgeMoveRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		old := l.addNetwork("mv", nil)
		other := l.addNetwork("mvother", nil)
		c := l.addContainer(old, "m1")
		o := l.addContainer(other, "o1")
		serveWhoami(t, c.ns, whoamiPort)
		moved := l.addBridge("mv", nil)
		err := l.fw.EnsureNetwork(moved.Network)
		expectCode(t, "move with a container on the old bridge", err, codes.InvalidNetworkConfig, old.Bridge, moved.Bridge, c.hostVeth)
		err = l.fw.AddAttachment(moved.Network, Attachment{Network: "mv", ContainerID: "ctr-new", IfName: ctrLink, IPs: []net.IP{moved.gw4}})
		expectCode(t, "ADD on the new bridge", err, codes.InvalidNetworkConfig, old.Bridge, moved.Bridge)
		must(t, "CheckNetwork on the old bridge", l.fw.CheckNetwork(old.Network))
		expectBlocked(t, "another network to the old bridge", o.ns, hostPort(c.ip4, whoamiPort))
	})
}

// TestMixedBackendsRefused: one backend per host. A network on the other backend is
// refused (code 7 naming both) either way round, detection follows the backend in use,
// and a bridge left without rules cannot reach the managed network's containers.
func TestMixedBackendsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		otherKind := map[string]string{KindNFTables: KindIPTables, KindIPTables: KindNFTables}[l.kind]
		a := l.addNetwork("first", nil)
		ca := l.addContainer(a, "a1")
		serveWhoami(t, ca.ns, whoamiPort)
		other, err := New(otherKind, Options{NetNS: l.host, LockFile: t.TempDir() + "/fw.lock"})
		must(t, "New "+otherKind, err)
		b := l.addBridge("second", nil)
		cb := l.addContainer(b, "b1")
		err = other.EnsureNetwork(b.Network)
		expectCode(t, otherKind+" network beside "+l.kind, err, codes.InvalidNetworkConfig, otherKind, l.kind, `"second"`)
		err = other.AddAttachment(b.Network, cb.attachment(PortMapping{HostPort: pubPort, ContainerPort: whoamiPort}))
		expectCode(t, otherKind+" ADD beside "+l.kind, err, codes.InvalidNetworkConfig, otherKind, l.kind)
		expectBlocked(t, "unmanaged bridge to the managed network", cb.ns, hostPort(ca.ip4, whoamiPort))
		expectBlocked(t, "unmanaged bridge to the managed network v6", cb.ns, hostPort(ca.ip6, whoamiPort))

		detected, err := New(KindDetect, Options{NetNS: l.host, LockFile: t.TempDir() + "/fw.lock"})
		must(t, "New detect", err)
		if detected.Name() != l.kind {
			t.Fatalf("detection chose %s on a host whose networks use %s", detected.Name(), l.kind)
		}
		// Once the last network is gone, the other backend may take the host.
		must(t, "RemoveNetwork", l.fw.RemoveNetwork(a.Name))
		must(t, otherKind+" after the last "+l.kind+" network", other.EnsureNetwork(b.Network))
		must(t, "RemoveNetwork on "+otherKind, other.RemoveNetwork(b.Name))
		if left := l.inHost("nft", "list", "tables"); strings.Contains(left, iptMarkerTable) {
			t.Fatalf("marker table left behind: %s", left)
		}
	})
}

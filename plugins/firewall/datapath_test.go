package firewall

import (
	"net"
	"testing"
)

const (
	pubPort     = 8080
	pubPortHost = 8081 // published on hostOut4 and 127.0.0.1 only
	pubPortAll  = 8083 // published on every address, and on 127.0.0.1 by a second mapping
)

var loopbackIP = net.IPv4(127, 0, 0, 1)

func TestMasquerade(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("masq", nil)
		c := l.addContainer(n, "c1")
		serveWhoami(t, l.outside, outsidePort)

		expectSeenAs(t, "v4 masquerade", c.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
		expectSeenAs(t, "v4 udp masquerade", c.ns, "udp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
		expectSeenAs(t, "v6 masquerade", c.ns, "tcp", hostPort(outside6.IP, outsidePort), hostOut6.IP)
		// Traffic to the gateway is not masqueraded.
		serveWhoami(t, l.host, outsidePort)
		expectSeenAs(t, "to the host", c.ns, "tcp", hostPort(n.gw4, outsidePort), c.ip4)

		// Without ipMasq the outside cannot answer (it has no route to the subnet).
		n.IPMasq = false
		must(t, "EnsureNetwork without ipMasq", l.fw.EnsureNetwork(n.Network))
		expectBlocked(t, "no masquerade", c.ns, hostPort(outside4.IP, outsidePort))
	})
}

// TestPublishedPorts runs with br_netfilter's bridge hooks off (the plain case: hairpin
// only works through the masquerade) and on (bridged frames pass conntrack too).
func TestPublishedPorts(t *testing.T) {
	eachVariant(t, []string{"plain", "br_netfilter"}, func(t *testing.T, l *lab, variant string) {
		brnf := variant == "br_netfilter"
		if !l.bridgeNetfilter(brnf) && brnf {
			t.Skip("br_netfilter is not loaded")
		}
		testPublishedPorts(t, l)
	})
}

func testPublishedPorts(t *testing.T, l *lab) {
	n := l.addNetwork("pub", nil)
	c1 := l.addContainer(n, "c1")
	c2 := l.addContainer(n, "c2")
	serveWhoami(t, c1.ns, whoamiPort)
	l.hairpin(c1)
	l.publish(c1,
		PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "tcp"},
		PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "udp"},
		PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()},
		PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort, HostIP: "127.0.0.1"},
		PortMapping{HostPort: pubPortAll, ContainerPort: whoamiPort},
		PortMapping{HostPort: pubPortAll, ContainerPort: whoamiPort, HostIP: "127.0.0.1"})

	// From another host: DNAT, the container sees the real client.
	expectSeenAs(t, "outside v4", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)
	expectSeenAs(t, "outside v4 udp", l.outside, "udp", hostPort(hostOut4.IP, pubPort), outside4.IP)
	expectSeenAs(t, "outside v6", l.outside, "tcp", hostPort(hostOut6.IP, pubPort), outside6.IP)
	// From the host itself: loopback only where a mapping names it (masqueraded to the
	// gateway); a mapping without hostIP leaves the host's loopback alone.
	expectRefused(t, "host loopback, no hostIP", l.host, hostPort(loopbackIP, pubPort))
	expectSeenAs(t, "host loopback, hostIP 127.0.0.1", l.host, "tcp", hostPort(loopbackIP, pubPortHost), n.gw4)
	expectSeenAs(t, "host loopback, opted in beside *", l.host, "tcp", hostPort(loopbackIP, pubPortAll), n.gw4)
	expectSeenAs(t, "outside, opted in beside *", l.outside, "tcp", hostPort(hostOut4.IP, pubPortAll), outside4.IP)
	expectSeenAs(t, "host address", l.host, "tcp", hostPort(hostOut4.IP, pubPort), hostOut4.IP)
	// From containers of the same network: hairpin, masqueraded to the gateway.
	expectSeenAs(t, "hairpin c2", c2.ns, "tcp", hostPort(n.gw4, pubPort), n.gw4)
	expectSeenAs(t, "hairpin c2 v6", c2.ns, "tcp", hostPort(n.gw6, pubPort), n.gw6)
	expectSeenAs(t, "hairpin to itself", c1.ns, "tcp", hostPort(hostOut4.IP, pubPort), n.gw4)
	// A port bound to one host address answers there only.
	expectSeenAs(t, "hostIP outside", l.outside, "tcp", hostPort(hostOut4.IP, pubPortHost), outside4.IP)
	expectRefused(t, "hostIP elsewhere", c2.ns, hostPort(n.gw4, pubPortHost))
	expectRefused(t, "hostIP on v6", l.outside, hostPort(hostOut6.IP, pubPortHost))
}

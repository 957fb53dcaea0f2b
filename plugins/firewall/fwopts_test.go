package firewall

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/codes"
)

const udpWait = 2 * time.Second

// viaGateway makes c send to dst through its gateway (the host routes it), as a
// container that wants around the bridge's drop would try.
func viaGateway(t *testing.T, c *container, dst net.IP) {
	t.Helper()
	h := handleAt(t, c.ns)
	eth, err := h.LinkByName(ctrLink)
	must(t, "find eth0", err)
	gw, bits := c.net.gw4, 32
	if dst.To4() == nil {
		gw, bits = c.net.gw6, 128
	}
	must(t, "route via gateway", h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index,
		Dst: &net.IPNet{IP: dst, Mask: net.CIDRMask(bits, bits)}, Gw: gw}))
}

// TestNoICC: with NoICC, containers of one network reach each other neither switched by
// the bridge nor routed through the host, in both families and both directions; the
// gateway, the outside, a published port from outside and a neighbour's published port
// on a host address (hairpin through the DNAT, both ways, TCP and UDP) still work. Two
// ways (noicc.go): br_netfilter turned on for the bridge alone by NoICCBridge, with the
// host-wide sysctls off (the hairpin is switched between the two ports after its DNAT,
// which port isolation used to drop), and a host without br_netfilter, emulated by
// leaving the bridge's own options alone with the sysctls off, where the ports are
// isolated. The same rig delivers once icc is back on, so the blocks are the option's
// doing.
func TestNoICC(t *testing.T) {
	eachVariant(t, []string{"br_netfilter", "isolated-ports"}, func(t *testing.T, l *lab, way string) {
		if !l.bridgeNetfilter(false) && way == "br_netfilter" {
			t.Skip("br_netfilter is not in this kernel")
		}
		testNoICC(t, l, way == "isolated-ports")
	})
}

// isolatePort sets IFLA_BRPORT_ISOLATED on the container's bridge port, as moor-bridge
// does for icc false on a host without br_netfilter.
func (l *lab) isolatePort(c *container, on bool) {
	l.t.Helper()
	hv, err := l.hostNL.LinkByName(c.hostVeth)
	must(l.t, "find host veth", err)
	must(l.t, "port isolation", l.hostNL.LinkSetIsolated(hv, on))
}

func testNoICC(t *testing.T, l *lab, isolate bool) {
	n := l.addNetwork("noicc", func(n *Network) { n.NoICC = true })
	c1, c2 := l.addContainer(n, "c1"), l.addContainer(n, "c2")
	if isolate {
		l.isolatePort(c1, true)
		l.isolatePort(c2, true)
	} else {
		iso, unset, err := NoICCBridge(l.host, n.Bridge)
		must(t, "NoICCBridge", err)
		if iso || unset == nil {
			t.Fatalf("NoICCBridge: isolate %v, undo %v; want no isolation and an undo (br_netfilter is there)", iso, unset != nil)
		}
		// Its undo turns the bridge's switch off again; a second call then has one again,
		// and a third, with the switch on already, none.
		must(t, "NoICCBridge undo", unset())
		if problems, err := CheckNoICCBridge(l.host, n.Bridge, c1.hostVeth); err != nil || len(problems) != 2 {
			t.Fatalf("after the undo: %v %v, want both nf_call options named", problems, err)
		}
		if _, unset, err = NoICCBridge(l.host, n.Bridge); err != nil || unset == nil {
			t.Fatalf("NoICCBridge again: undo %v, %v", unset != nil, err)
		}
		if _, unset, err = NoICCBridge(l.host, n.Bridge); err != nil || unset != nil {
			t.Fatalf("NoICCBridge with the switch on already: undo %v, %v; want none", unset != nil, err)
		}
		defer func() {
			// CHECK's view: nothing missing, then the bridge's own switch turned off.
			problems, err := CheckNoICCBridge(l.host, n.Bridge, c1.hostVeth)
			if err != nil || len(problems) != 0 {
				t.Fatalf("CheckNoICCBridge: %v %v, want nothing missing", problems, err)
			}
			l.inHost("ip", "link", "set", n.Bridge, "type", "bridge", "nf_call_ip6tables", "0")
			problems, err = CheckNoICCBridge(l.host, n.Bridge, c1.hostVeth)
			if err != nil || len(problems) != 1 || !strings.Contains(problems[0], "nf_call_ip6tables off") {
				t.Fatalf("CheckNoICCBridge after nf_call_ip6tables 0: %v %v", problems, err)
			}
		}()
	}
	serveWhoami(t, c1.ns, whoamiPort)
	serveWhoami(t, c2.ns, whoamiPort)
	serveWhoami(t, l.host, outsidePort)
	serveWhoami(t, l.outside, outsidePort)
	l.publish(c1, PortMapping{HostPort: pubPort + 1, ContainerPort: whoamiPort},
		PortMapping{HostPort: pubPort + 1, ContainerPort: whoamiPort, Protocol: "udp"})
	l.publish(c2, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort},
		PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "udp"})

	for _, p := range []struct {
		from, to *container
	}{{c1, c2}, {c2, c1}} {
		what := p.from.name + " to " + p.to.name
		expectBlocked(t, what+" bridged v4", p.from.ns, hostPort(p.to.ip4, whoamiPort))
		expectBlocked(t, what+" bridged v6", p.from.ns, hostPort(p.to.ip6, whoamiPort))
		if udpArrives(t, p.from.ns, p.to.ns, p.to.ip4, udpWait) {
			t.Fatalf("%s: a bridged datagram arrived", what)
		}
	}
	// The neighbour's published port on the host's addresses: hairpin through the DNAT,
	// masqueraded to the gateway, both ways.
	expectSeenAs(t, "c1 to c2's published port", c1.ns, "tcp", hostPort(hostOut4.IP, pubPort), n.gw4)
	expectSeenAs(t, "c1 to c2's published port v6", c1.ns, "tcp", hostPort(hostOut6.IP, pubPort), n.gw6)
	expectSeenAs(t, "c1 to c2's published port udp", c1.ns, "udp", hostPort(hostOut4.IP, pubPort), n.gw4)
	expectSeenAs(t, "c1 to c2's published port on the gateway", c1.ns, "tcp", hostPort(n.gw4, pubPort), n.gw4)
	expectSeenAs(t, "c2 to c1's published port", c2.ns, "tcp", hostPort(hostOut4.IP, pubPort+1), n.gw4)
	expectSeenAs(t, "c2 to c1's published port v6", c2.ns, "tcp", hostPort(hostOut6.IP, pubPort+1), n.gw6)
	expectSeenAs(t, "c2 to c1's published port udp v6", c2.ns, "udp", hostPort(hostOut6.IP, pubPort+1), n.gw6)

	viaGateway(t, c1, c2.ip4)
	viaGateway(t, c1, c2.ip6)
	viaGateway(t, c2, c1.ip4)
	viaGateway(t, c2, c1.ip6)
	if udpArrives(t, c1.ns, c2.ns, c2.ip4, udpWait) {
		t.Fatal("a datagram routed through the host reached the other container")
	}
	expectBlocked(t, "routed v6", c1.ns, hostPort(c2.ip6, whoamiPort))
	expectBlocked(t, "routed v4 back", c2.ns, hostPort(c1.ip4, whoamiPort))
	expectBlocked(t, "routed v6 back", c2.ns, hostPort(c1.ip6, whoamiPort))

	expectSeenAs(t, "to the gateway", c1.ns, "tcp", hostPort(n.gw4, outsidePort), c1.ip4)
	expectSeenAs(t, "to the gateway v6", c1.ns, "tcp", hostPort(n.gw6, outsidePort), c1.ip6)
	expectSeenAs(t, "to the outside", c1.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
	expectSeenAs(t, "to the outside v6", c1.ns, "tcp", hostPort(outside6.IP, outsidePort), hostOut6.IP)
	expectSeenAs(t, "outside to the published port", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)
	expectSeenAs(t, "outside to the published port v6", l.outside, "tcp", hostPort(hostOut6.IP, pubPort), outside6.IP)
	expectSeenAs(t, "host to a container", l.host, "tcp", hostPort(c2.ip4, whoamiPort), n.gw4)
	must(t, "CheckNetwork", l.fw.CheckNetwork(n.Network))

	n.NoICC = false
	must(t, "EnsureNetwork icc", l.fw.EnsureNetwork(n.Network))
	if !udpArrives(t, c1.ns, c2.ns, c2.ip4, udpWait) {
		t.Fatal("with icc back on, the routed datagram does not arrive: the rig proves nothing")
	}
	if isolate {
		l.isolatePort(c1, false)
		l.isolatePort(c2, false)
	}
	// Back to bridged delivery: a direct route again.
	for _, c := range []*container{c1, c2} {
		h := handleAt(t, c.ns)
		eth, err := h.LinkByName(ctrLink)
		must(t, "find eth0", err)
		for _, o := range []*container{c1, c2} {
			if o == c {
				continue
			}
			must(t, "direct route", h.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: &net.IPNet{IP: o.ip6, Mask: net.CIDRMask(128, 128)}}))
			must(t, "direct route", h.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: &net.IPNet{IP: o.ip4, Mask: net.CIDRMask(32, 32)}}))
		}
	}
	expectSeenAs(t, "icc on, bridged v6", c1.ns, "tcp", hostPort(c2.ip6, whoamiPort), c1.ip6)
	expectSeenAs(t, "icc on, bridged v4 back", c2.ns, "tcp", hostPort(c1.ip4, whoamiPort), c2.ip4)
}

// TestGatewayModes: per family. IPv4 routed, IPv6 nat: the outside reaches any port of
// a container over IPv4 and sees its own address (no masquerade either way), but over
// IPv6 only published ports and masqueraded; another network stays isolated. Then IPv4
// isolated: nothing in or out over IPv4, containers still reach each other.
func TestGatewayModes(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("modes", func(n *Network) { n.GatewayMode4 = GatewayRouted })
		other := l.addNetwork("modesother", nil)
		c1, c2 := l.addContainer(n, "c1"), l.addContainer(n, "c2")
		o := l.addContainer(other, "o1")
		const sshPort = 22
		serveWhoami(t, c1.ns, sshPort)
		serveWhoami(t, l.outside, outsidePort)
		routeSubnetsVia(t, l)

		expectSeenAs(t, "routed v4 in", l.outside, "tcp", hostPort(c1.ip4, sshPort), outside4.IP)
		expectSeenAs(t, "routed v4 out, not masqueraded", c1.ns, "tcp", hostPort(outside4.IP, outsidePort), c1.ip4)
		expectBlocked(t, "nat v6 in", l.outside, hostPort(c1.ip6, sshPort))
		expectSeenAs(t, "nat v6 out, masqueraded", c1.ns, "tcp", hostPort(outside6.IP, outsidePort), hostOut6.IP)
		expectBlocked(t, "another network to routed v4", o.ns, hostPort(c1.ip4, sshPort))
		expectBlocked(t, "another network to nat v6", o.ns, hostPort(c1.ip6, sshPort))
		serveWhoami(t, o.ns, sshPort)
		expectBlocked(t, "routed v4 to another network", c1.ns, hostPort(o.ip4, sshPort))
		expectBlocked(t, "nat v6 to another network", c1.ns, hostPort(o.ip6, sshPort))
		expectSeenAs(t, "routed v4 between containers", c2.ns, "tcp", hostPort(c1.ip4, sshPort), c2.ip4)

		n.GatewayMode4, n.GatewayMode6, n.IPMasq = GatewayIsolated, GatewayRouted, false
		must(t, "EnsureNetwork isolated v4, routed v6", l.fw.EnsureNetwork(n.Network))
		expectBlocked(t, "isolated v4 in", l.outside, hostPort(c1.ip4, sshPort))
		expectBlocked(t, "isolated v4 out", c1.ns, hostPort(outside4.IP, outsidePort))
		expectSeenAs(t, "isolated v4 between containers", c2.ns, "tcp", hostPort(c1.ip4, sshPort), c2.ip4)
		expectSeenAs(t, "routed v6 in", l.outside, "tcp", hostPort(c1.ip6, sshPort), outside6.IP)
		expectSeenAs(t, "routed v6 out", c1.ns, "tcp", hostPort(outside6.IP, outsidePort), c1.ip6)
		expectBlocked(t, "another network to routed v6", o.ns, hostPort(c1.ip6, sshPort))
		expectBlocked(t, "routed v6 to another network", c1.ns, hostPort(o.ip6, sshPort))

		// Both families isolated: nothing in or out in either, containers still talk.
		n.GatewayMode6 = GatewayIsolated
		must(t, "EnsureNetwork isolated v4 and v6", l.fw.EnsureNetwork(n.Network))
		expectBlocked(t, "isolated v6 in", l.outside, hostPort(c1.ip6, sshPort))
		expectBlocked(t, "isolated v6 out", c1.ns, hostPort(outside6.IP, outsidePort))
		expectBlocked(t, "isolated v4 out, again", c1.ns, hostPort(outside4.IP, outsidePort))
		expectSeenAs(t, "isolated v6 between containers", c2.ns, "tcp", hostPort(c1.ip6, sshPort), c2.ip6)
		expectBlocked(t, "another network to isolated v6", o.ns, hostPort(c1.ip6, sshPort))
		expectBlocked(t, "isolated v6 to another network", c1.ns, hostPort(o.ip6, sshPort))

		bad := n.Network
		bad.GatewayMode6 = "bridge"
		expectCode(t, "unknown mode", l.fw.EnsureNetwork(bad), codes.InvalidNetworkConfig, "gatewayModeIPv6", "bridge")
	})
}

// TestSNATAddress: masqueraded traffic leaves with the configured source in its family;
// the other family keeps the outgoing interface's address. An address needing a NAT
// mode that is not there is code 7.
func TestSNATAddress(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		snat := net.ParseIP("192.0.2.77").To4()
		l.upWithAddrs(l.hostNL, hostOutLink, &net.IPNet{IP: snat, Mask: net.CIDRMask(32, 32)})
		n := l.addNetwork("snat", func(n *Network) { n.SNATAddress = snat })
		c := l.addContainer(n, "c1")
		serveWhoami(t, l.outside, outsidePort)
		expectSeenAs(t, "v4 with snatAddress", c.ns, "tcp", hostPort(outside4.IP, outsidePort), snat)
		expectSeenAs(t, "v4 udp with snatAddress", c.ns, "udp", hostPort(outside4.IP, outsidePort), snat)
		expectSeenAs(t, "v6 masquerade unchanged", c.ns, "tcp", hostPort(outside6.IP, outsidePort), hostOut6.IP)

		// An IPv6 snatAddress, on a network of its own: IPv6 leaves with it, IPv4 with the
		// outgoing interface's address.
		snat6 := net.ParseIP("2001:db8::77")
		l.upWithAddrs(l.hostNL, hostOutLink, &net.IPNet{IP: snat6, Mask: net.CIDRMask(128, 128)})
		n6 := l.addNetwork("snat6", func(n *Network) { n.SNATAddress = snat6 })
		c6 := l.addContainer(n6, "c6")
		expectSeenAs(t, "v6 with snatAddress", c6.ns, "tcp", hostPort(outside6.IP, outsidePort), snat6)
		expectSeenAs(t, "v6 udp with snatAddress", c6.ns, "udp", hostPort(outside6.IP, outsidePort), snat6)
		expectSeenAs(t, "v4 masquerade unchanged", c6.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)

		// Both families at once (Docker's host_ipv4 and host_ipv6): snatAddress for IPv4,
		// snatAddressIPv6 for IPv6. The IPv6 one is no address of the host (the outside
		// routes it back to the host), so masquerade could never pick it by itself.
		snatB6 := net.ParseIP("2001:db8:99::9")
		outNL := handleAt(t, l.outside)
		must(t, "route to "+snatB6.String(), outNL.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: snatB6, Mask: net.CIDRMask(128, 128)}, Gw: hostOut6.IP}))
		both := l.addNetwork("snatboth", func(n *Network) { n.SNATAddress, n.SNATAddressIPv6 = snat, snatB6 })
		cb := l.addContainer(both, "cb")
		expectSeenAs(t, "v4 with both", cb.ns, "tcp", hostPort(outside4.IP, outsidePort), snat)
		expectSeenAs(t, "v6 with both", cb.ns, "tcp", hostPort(outside6.IP, outsidePort), snatB6)
		expectSeenAs(t, "v6 udp with both", cb.ns, "udp", hostPort(outside6.IP, outsidePort), snatB6)
		bad := both.Network
		bad.SNATAddressIPv6 = snat
		expectCode(t, "IPv4 snatAddressIPv6", l.fw.EnsureNetwork(bad), codes.InvalidNetworkConfig, "snatAddressIPv6", snat.String())
		bad = both.Network
		bad.SNATAddress = snat6
		expectCode(t, "two IPv6 snat addresses", l.fw.EnsureNetwork(bad), codes.InvalidNetworkConfig, "snatAddressIPv6", snatB6.String())
		bad = both.Network
		bad.GatewayMode6 = GatewayRouted
		expectCode(t, "snatAddressIPv6 in routed mode", l.fw.EnsureNetwork(bad), codes.InvalidNetworkConfig, "snatAddressIPv6", snatB6.String())
		expectSeenAs(t, "refused changes left both alone", cb.ns, "tcp", hostPort(outside6.IP, outsidePort), snatB6)

		bad = n.Network
		bad.GatewayMode4 = GatewayRouted
		expectCode(t, "snat in routed mode", l.fw.EnsureNetwork(bad), codes.InvalidNetworkConfig, "snatAddress", snat.String())
		bad = n.Network
		bad.IPMasq = false
		expectCode(t, "snat without ipMasq", l.fw.EnsureNetwork(bad), codes.InvalidNetworkConfig, "snatAddress")
		expectSeenAs(t, "refused changes left the rules alone", c.ns, "tcp", hostPort(outside4.IP, outsidePort), snat)
	})
}

// TestUserChain: the operator's chain (nftables table inet moor-user, iptables
// MOOR-USER) is created by moor, runs before moor's accepts for published ports, and a
// rule put there survives ADD, DEL, GC of other containers and the removal of every
// network.
func TestUserChain(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("user", nil)
		c1, c2 := l.addContainer(n, "c1"), l.addContainer(n, "c2")
		serveWhoami(t, c1.ns, whoamiPort)
		l.publish(c1, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
		expectSeenAs(t, "before the operator's rule", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)
		// "Only 198.51.100.0/24 may reach published ports": the outside (192.0.2.2) may not.
		if l.kind == KindNFTables {
			l.inHost("nft", "add rule inet "+UserTable+" "+UserChain+" ct status dnat ip saddr != 198.51.100.0/24 drop")
		} else {
			l.inHost("iptables", "-A", IPTUserChain, "!", "-s", "198.51.100.0/24", "-m", "conntrack", "--ctstate", "DNAT", "-j", "DROP")
		}
		blocked := func(when string) {
			t.Helper()
			expectBlocked(t, "operator's rule "+when, l.outside, hostPort(hostOut4.IP, pubPort))
			// The rule is IPv4 only: IPv6 still reaches the port (the block is the rule's).
			expectSeenAs(t, "v6 "+when, l.outside, "tcp", hostPort(hostOut6.IP, pubPort), outside6.IP)
		}
		blocked("after it was added")
		a2 := l.publish(c2, PortMapping{HostPort: pubPort + 1, ContainerPort: whoamiPort})
		blocked("after another ADD")
		must(t, "DelAttachment", l.fw.DelAttachment(a2.Network, a2.ContainerID, a2.IfName))
		blocked("after a DEL")
		l.publish(c2, PortMapping{HostPort: pubPort + 1, ContainerPort: whoamiPort})
		must(t, "GC", GC(l.fw, n.Name, []AttachmentKey{c1.attachment().Key()}))
		blocked("after GC")
		must(t, "RemoveNetwork", l.fw.RemoveNetwork(n.Name))
		n2 := l.addNetwork("user2", nil)
		c3 := l.addContainer(n2, "c3")
		serveWhoami(t, c3.ns, whoamiPort)
		l.publish(c3, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
		blocked("after the last network went and a new one came")
	})
}

package firewall

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

func TestIsolation(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		a := l.addNetwork("isoa", nil)
		b := l.addNetwork("isob", nil)
		a1, a2 := l.addContainer(a, "a1"), l.addContainer(a, "a2")
		b1 := l.addContainer(b, "b1")
		for _, c := range []*container{a1, a2, b1} {
			serveWhoami(t, c.ns, whoamiPort)
		}
		expectSeenAs(t, "same bridge", a1.ns, "tcp", hostPort(a2.ip4, whoamiPort), a1.ip4)
		expectSeenAs(t, "same bridge v6", a2.ns, "tcp", hostPort(a1.ip6, whoamiPort), a2.ip6)
		// Both ways, both families (netavark#1515: isolation bypassed over IPv6), TCP and UDP.
		for _, p := range []struct {
			name     string
			from, to *container
		}{{"a to b", a1, b1}, {"b to a", b1, a1}} {
			expectBlocked(t, p.name, p.from.ns, hostPort(p.to.ip4, whoamiPort))
			expectBlocked(t, p.name+" v6", p.from.ns, hostPort(p.to.ip6, whoamiPort))
			if got, err := whoami(p.from.ns, "udp", hostPort(p.to.ip6, whoamiPort), blockedTimeout); err == nil {
				t.Fatalf("%s v6 udp: answered (seen as %s), want blocked", p.name, got)
			}
			if udpArrives(t, p.from.ns, p.to.ns, p.to.ip4, udpWait) {
				t.Fatalf("%s: a datagram arrived", p.name)
			}
		}

		// Without isolation on either side the networks reach each other (masqueraded by
		// the sender's network, like Docker).
		a.Isolate, b.Isolate = false, false
		must(t, "EnsureNetwork a", l.fw.EnsureNetwork(a.Network))
		must(t, "EnsureNetwork b", l.fw.EnsureNetwork(b.Network))
		expectSeenAs(t, "a to b, no isolation", a1.ns, "tcp", hostPort(b1.ip4, whoamiPort), b.gw4)
		expectSeenAs(t, "b to a v6, no isolation", b1.ns, "tcp", hostPort(a1.ip6, whoamiPort), a.gw6)

		// One isolating side is enough to separate them, both ways.
		a.Isolate = true
		must(t, "EnsureNetwork a", l.fw.EnsureNetwork(a.Network))
		expectBlocked(t, "b to isolating a", b1.ns, hostPort(a1.ip4, whoamiPort))
		expectBlocked(t, "b to isolating a v6", b1.ns, hostPort(a1.ip6, whoamiPort))
		expectBlocked(t, "isolating a to b v6", a1.ns, hostPort(b1.ip6, whoamiPort))
	})
}

func TestInternal(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("intern", func(n *Network) { n.Internal = true })
		other := l.addNetwork("other", func(n *Network) { n.Isolate = false })
		c := l.addContainer(n, "i1")
		o := l.addContainer(other, "o1")
		serveWhoami(t, c.ns, whoamiPort)
		serveWhoami(t, o.ns, whoamiPort)
		serveWhoami(t, l.outside, outsidePort)

		expectBlocked(t, "internal to outside", c.ns, hostPort(outside4.IP, outsidePort))
		expectBlocked(t, "internal to another network", c.ns, hostPort(o.ip4, whoamiPort))
		expectBlocked(t, "another network to internal", o.ns, hostPort(c.ip4, whoamiPort))
		expectSeenAs(t, "host to internal", l.host, "tcp", hostPort(c.ip4, whoamiPort), n.gw4)

		n.Internal = false
		must(t, "EnsureNetwork not internal", l.fw.EnsureNetwork(n.Network))
		expectSeenAs(t, "no longer internal", c.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
	})
}

// TestLocalnetGuard: route_localnet on the bridge must not let a container reach the
// host's loopback services. The container is rigged to send to 127.0.0.1 through its
// gateway (its own loopback routes removed); the host's loopback socket must receive
// nothing, while the same rig reaches a socket on the gateway address.
func TestLocalnetGuard(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("guard", nil)
		c := l.addContainer(n, "g1")

		h := handleAt(t, c.ns)
		eth, err := h.LinkByName(ctrLink)
		must(t, "find eth0", err)
		routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
		must(t, "list local routes", err)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.IsLoopback() {
				must(t, "delete local route "+r.Dst.String(), h.RouteDel(&r))
			}
		}
		must(t, "route 127/8 via gateway", h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index,
			Dst: loopback4, Gw: n.gw4, Src: c.ip4}))
		must(t, "container route_localnet", ApplySysctls(c.ns, []Sysctl{{Path: "net/ipv4/conf/" + ctrLink + "/route_localnet", Value: "1"}}))

		if !udpArrives(t, c.ns, l.host, n.gw4, reachTimeout) {
			t.Fatal("control: a datagram to the gateway did not arrive")
		}
		if udpArrives(t, c.ns, l.host, loopbackIP, blockedTimeout) {
			t.Fatal("a datagram from a container reached the host's 127.0.0.1")
		}
	})
}

// udpArrives sends a datagram from one netns to a fresh socket on to:port in another and
// tells whether it arrived within wait.
func udpArrives(t *testing.T, from, toNS ns.NetNS, to net.IP, wait time.Duration) bool {
	t.Helper()
	var pc net.PacketConn
	must(t, "listen", toNS.Do(func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp4", hostPort(to, 0))
		return err
	}))
	defer pc.Close()
	got := make(chan bool, 1)
	go func() {
		buf := make([]byte, udpBufSize)
		_ = pc.SetReadDeadline(time.Now().Add(wait))
		_, _, err := pc.ReadFrom(buf)
		got <- err == nil
	}()
	must(t, "send", from.Do(func(ns.NetNS) error {
		conn, err := net.Dial("udp4", pc.LocalAddr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte("hello"))
		return err
	}))
	return <-got
}

func isPortInUse(err error) bool {
	var coded codes.Coded
	var pe *PortInUseError
	return errors.As(err, &pe) && errors.As(err, &coded) && coded.CNICode() == codes.PortInUse
}

func TestPortConflict(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("conf", nil)
		m := l.addNetwork("conf2", nil)
		c1, c2, c3 := l.addContainer(n, "c1"), l.addContainer(n, "c2"), l.addContainer(m, "c3")
		serveWhoami(t, c1.ns, whoamiPort)
		l.publish(c1, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})

		for name, pm := range map[string]PortMapping{
			"same port, any address":       {HostPort: pubPort, ContainerPort: whoamiPort},
			"same port, one v4 address":    {HostPort: pubPort, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()},
			"same port, v6 any":            {HostPort: pubPort, ContainerPort: whoamiPort, HostIP: "::"},
			"same port, protocol in caps":  {HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "TCP"},
			"same port, other network":     {HostPort: pubPort, ContainerPort: whoamiPort, HostIP: "0.0.0.0"},
			"same port, hostIP v6 address": {HostPort: pubPort, ContainerPort: whoamiPort, HostIP: hostOut6.IP.String()},
		} {
			c := c2
			if strings.Contains(name, "other network") {
				c = c3
			}
			err := l.fw.AddAttachment(c.net.Network, c.attachment(pm))
			if !isPortInUse(err) {
				t.Fatalf("%s: got %v, want PortInUseError code 103", name, err)
			}
			if !strings.Contains(err.Error(), "ctr-c1") {
				t.Fatalf("%s: %q does not name the holder", name, err)
			}
		}
		// The refused attachment left nothing behind, and the holder still works.
		keys, err := l.fw.Attachments(n.Name)
		must(t, "Attachments", err)
		if len(keys) != 1 || keys[0] != c1.attachment().Key() {
			t.Fatalf("Attachments after refusals = %v, want only c1", keys)
		}
		expectSeenAs(t, "holder still published", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)

		// Another protocol, or two different specific addresses, do not clash.
		l.publish(c2, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "udp"},
			PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()})
		l.publish(c3, PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort, HostIP: n.gw4.String()})
		err = l.fw.AddAttachment(m.Network, c3.attachment(PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort}))
		if !isPortInUse(err) {
			t.Fatalf("any-address after specific ones: got %v, want code 103", err)
		}
		// A duplicate inside one request clashes too.
		err = l.fw.AddAttachment(m.Network, c3.attachment(PortMapping{HostPort: 9, ContainerPort: 1},
			PortMapping{HostPort: 9, ContainerPort: 2, HostIP: n.gw4.String()}))
		if !isPortInUse(err) {
			t.Fatalf("duplicate in one request: got %v, want code 103", err)
		}
	})
}

// attachmentRuleCount counts the rules labelled with the key, through the backend's own
// listing.
func attachmentRuleCount(t *testing.T, l *lab, k AttachmentKey) int {
	t.Helper()
	var labels []label
	switch b := l.fw.(type) {
	case *nftBackend:
		c, done, err := b.conn()
		must(t, "conn", err)
		defer done()
		ports, err := b.readPorts(c, moorTable())
		must(t, "read port maps", err)
		labels = portLabels(ports)
	case *iptBackend:
		must(t, "list", b.do(func() error {
			return b.each(b.families(), func(s *iptSession) error {
				_, refs, err := s.attachmentRules()
				labels = append(labels, refs...)
				return err
			})
		}))
	}
	n := 0
	for _, lb := range labels {
		if lb.key() == k {
			n++
		}
	}
	return n
}

func TestAttachmentLifecycle(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addBridge("life", nil) // no EnsureNetwork: the ADD does it
		c1, c2 := l.addContainer(n, "c1"), l.addContainer(n, "c2")
		serveWhoami(t, c1.ns, whoamiPort)
		serveWhoami(t, c2.ns, whoamiPort)
		serveWhoami(t, l.outside, outsidePort)
		const port2 = pubPort + 2
		a1 := l.publish(c1, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
		must(t, "CheckNetwork after the first ADD", l.fw.CheckNetwork(n.Network))
		expectSeenAs(t, "masquerade after the first ADD", c2.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
		rules := attachmentRuleCount(t, l, a1.Key())
		if rules == 0 {
			t.Fatal("AddAttachment made no labelled rule")
		}
		l.publish(c1, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort}) // ADD twice
		if got := attachmentRuleCount(t, l, a1.Key()); got != rules {
			t.Fatalf("second ADD: %d rules, want %d", got, rules)
		}
		a2 := l.publish(c2, PortMapping{HostPort: port2, ContainerPort: whoamiPort})
		keys, err := l.fw.Attachments(n.Name)
		must(t, "Attachments", err)
		if len(keys) != 2 {
			t.Fatalf("Attachments = %v, want c1 and c2", keys)
		}
		must(t, "CheckAttachment c1", l.fw.CheckAttachment(n.Network, a1))

		// A re-ADD with other ports replaces the old ones.
		l.publish(c1, PortMapping{HostPort: pubPort + 1, ContainerPort: whoamiPort})
		expectRefused(t, "replaced port", l.outside, hostPort(hostOut4.IP, pubPort))
		expectSeenAs(t, "new port", l.outside, "tcp", hostPort(hostOut4.IP, pubPort+1), outside4.IP)

		// DEL removes exactly c1's rules (its netns gone), twice is fine.
		must(t, "close c1 netns", c1.ns.Close())
		must(t, "DelAttachment c1", l.fw.DelAttachment(n.Name, a1.ContainerID, a1.IfName))
		must(t, "DelAttachment c1 again", l.fw.DelAttachment(n.Name, a1.ContainerID, a1.IfName))
		if got := attachmentRuleCount(t, l, a1.Key()); got != 0 {
			t.Fatalf("after DEL: %d rules of c1 left", got)
		}
		expectRefused(t, "deleted port", l.outside, hostPort(hostOut4.IP, pubPort+1))
		expectSeenAs(t, "other attachment", l.outside, "tcp", hostPort(hostOut4.IP, port2), outside4.IP)
		if err := l.fw.CheckAttachment(n.Network, a1); err == nil {
			t.Fatal("CheckAttachment after DEL passed")
		}

		// GC keeps the valid attachments and removes the others.
		must(t, "GC keeping c2", GC(l.fw, n.Name, []AttachmentKey{a2.Key()}))
		expectSeenAs(t, "kept by GC", l.outside, "tcp", hostPort(hostOut4.IP, port2), outside4.IP)
		must(t, "GC", GC(l.fw, n.Name, nil))
		keys, err = l.fw.Attachments(n.Name)
		must(t, "Attachments", err)
		if len(keys) != 0 {
			t.Fatalf("Attachments after GC = %v, want none", keys)
		}
		expectRefused(t, "collected port", l.outside, hostPort(hostOut4.IP, port2))
	})
}

func TestCheckNamesMissingRule(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("chk", nil)
		c := l.addContainer(n, "c1")
		a := l.publish(c, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
		must(t, "CheckNetwork", l.fw.CheckNetwork(n.Network))
		must(t, "CheckAttachment", l.fw.CheckAttachment(n.Network, a))

		masq := "rule=" + ruleMasq + ":10.10.1.0/24"
		dnat := "rule=dnat fam=4 proto=tcp host=* port=8080"
		deleteRuleByHand(t, l, masq)
		deleteRuleByHand(t, l, dnat)
		for what, err := range map[string]error{
			masq: l.fw.CheckNetwork(n.Network),
			dnat: l.fw.CheckAttachment(n.Network, a),
		} {
			var me *MissingRulesError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), what) {
				t.Fatalf("Check after deleting %q: got %v", what, err)
			}
		}
		// An ADD alone repairs both (AddAttachment ensures the network too).
		must(t, "AddAttachment", l.fw.AddAttachment(n.Network, a))
		must(t, "CheckNetwork after repair", l.fw.CheckNetwork(n.Network))
		must(t, "CheckAttachment after repair", l.fw.CheckAttachment(n.Network, a))
	})
}

// deleteRuleByHand removes, outside the backend's API, the rule whose label contains
// text, as an admin or a firewall reload would.
func deleteRuleByHand(t *testing.T, l *lab, text string) {
	t.Helper()
	switch b := l.fw.(type) {
	case *nftBackend:
		c, done, err := b.conn()
		must(t, "conn", err)
		defer done()
		ports, err := b.readPorts(c, moorTable())
		must(t, "read port maps", err)
		for _, pe := range ports {
			if strings.Contains(pe.label.String(), text) {
				must(t, "delete element", b.deleteElements(c, moorTable(), []portElem{pe}))
				must(t, "flush", c.Flush())
				return
			}
		}
		chains, err := c.ListChainsOfTableFamily(moorTable().Family)
		must(t, "list chains", err)
		for _, ch := range chains {
			rules, err := b.readRules(c, moorTable(), ch.Name)
			must(t, "read rules", err)
			for _, r := range rules {
				if strings.Contains(r.label.String(), text) {
					must(t, "delete rule", c.DelRule(r.rule))
					must(t, "flush", c.Flush())
					return
				}
			}
		}
	case *iptBackend:
		for _, ch := range iptChains {
			out := l.inHost("iptables", "-t", ch.table, "-S", ch.chain)
			lines, err := parseIPTLines(strings.Split(strings.TrimSpace(out), "\n"))
			must(t, "parse", err)
			for _, ln := range lines {
				if strings.Contains(ln.label.String(), text) {
					l.inHost("iptables", append([]string{"-t", ch.table, "-D", ch.chain}, ln.args...)...)
					return
				}
			}
		}
	}
	t.Fatalf("no rule labelled %q to delete", text)
}

func TestRemoveNetwork(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		foreign := addForeignRules(t, l)
		a := l.addNetwork("rma", nil)
		b := l.addNetwork("rmb", nil)
		ca, cb := l.addContainer(a, "ca"), l.addContainer(b, "cb")
		l.publish(ca, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
		ab := l.publish(cb, PortMapping{HostPort: pubPort + 1, ContainerPort: whoamiPort})

		// A second network may not take a bridge that is already moor's.
		stolen := b.Network
		stolen.Name = "thief"
		var inv *InvalidError
		if err := l.fw.EnsureNetwork(stolen); !errors.As(err, &inv) {
			t.Fatalf("EnsureNetwork on network rmb's bridge: got %v, want InvalidError", err)
		}

		must(t, "RemoveNetwork a", l.fw.RemoveNetwork(a.Name))
		must(t, "RemoveNetwork a again", l.fw.RemoveNetwork(a.Name))
		keys, err := l.fw.Attachments(a.Name)
		must(t, "Attachments", err)
		if len(keys) != 0 {
			t.Fatalf("attachments of a removed network: %v", keys)
		}
		if err := l.fw.CheckNetwork(a.Network); err == nil {
			t.Fatal("CheckNetwork of a removed network passed")
		}
		must(t, "CheckNetwork b", l.fw.CheckNetwork(b.Network))
		must(t, "CheckAttachment b", l.fw.CheckAttachment(b.Network, ab))

		must(t, "RemoveNetwork b", l.fw.RemoveNetwork(b.Name))
		if left := moorLeftovers(t, l); left != "" {
			t.Fatalf("after removing every network, moor left: %s", left)
		}
		foreign()
	})
}

// addForeignRules puts a table/chain that is not moor's in place and returns the check
// that it survived untouched.
func addForeignRules(t *testing.T, l *lab) func() {
	t.Helper()
	if l.kind == KindNFTables {
		l.inHost("nft", "add table inet other; add chain inet other c; add rule inet other c counter comment \"moor net=rma\"")
		return func() {
			if out := l.inHost("nft", "list", "table", "inet", "other"); !strings.Contains(out, "counter") {
				t.Fatalf("foreign table changed:\n%s", out)
			}
		}
	}
	l.inHost("iptables", "-N", "OTHER")
	l.inHost("iptables", "-A", "OTHER", "-m", "comment", "--comment", "moor net=rma", "-j", "RETURN")
	return func() {
		if out := l.inHost("iptables", "-S", "OTHER"); !strings.Contains(out, "RETURN") {
			t.Fatalf("foreign chain changed:\n%s", out)
		}
	}
}

// moorLeftovers describes what of moor is still in the host netns.
func moorLeftovers(t *testing.T, l *lab) string {
	t.Helper()
	if l.kind == KindNFTables {
		out := l.inHost("nft", "list", "tables")
		if strings.Contains(out, "inet "+nftTableName+"\n") {
			return out
		}
		return ""
	}
	var left []string
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{tableFilter, tableNat} {
			// The operator's chain stays (moor never deletes it).
			out := strings.ReplaceAll(l.inHost(bin, "-t", table, "-S"), "-N "+IPTUserChain+"\n", "")
			if strings.Contains(out, "MOOR") || strings.Contains(out, "moor base") {
				left = append(left, out)
			}
		}
	}
	return strings.Join(left, "\n")
}

func TestNewAndStatus(t *testing.T) {
	requireRoot(t)
	_, err := New("pf", Options{})
	var coded codes.Coded
	if !errors.As(err, &coded) || coded.CNICode() != codes.InvalidNetworkConfig {
		t.Fatalf("New(pf): got %v, want code 7", err)
	}
	host := newNS(t)
	lock := Options{NetNS: host, LockFile: t.TempDir() + "/fw.lock"}
	b, err := New(KindDetect, lock)
	must(t, "New detect", err)
	if b.Name() != KindNFTables {
		t.Fatalf("detected %s on a kernel with nftables", b.Name())
	}
	for _, kind := range labBackends {
		b, err := New(kind, lock)
		must(t, "New "+kind, err)
		must(t, "Status "+kind, b.Status())
	}
	// Status leaves nothing behind.
	err = host.Do(func(ns.NetNS) error {
		c, done, err := newNFT(lock).conn()
		if err != nil {
			return err
		}
		defer done()
		tables, err := c.ListTables()
		if len(tables) != 0 {
			return errors.New("Status left a table: " + tables[0].Name)
		}
		return err
	})
	must(t, "no table left", err)
}

// TestEmptyHost: DEL, GC and removal find nothing and succeed; CHECK reports what is
// missing; none of them creates anything.
func TestEmptyHost(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		must(t, "DelAttachment", l.fw.DelAttachment("none", "ctr", "eth0"))
		keys, err := l.fw.Attachments("none")
		if err != nil || len(keys) != 0 {
			t.Fatalf("Attachments = %v, %v; want none", keys, err)
		}
		must(t, "GC", GC(l.fw, "none", nil))
		must(t, "RemoveNetwork", l.fw.RemoveNetwork("none"))
		n := Network{Name: "none", Bridge: "br-none", Subnets: []*net.IPNet{mustCIDR("10.99.0.0/24")}, IPMasq: true}
		var me *MissingRulesError
		if err := l.fw.CheckNetwork(n); !errors.As(err, &me) || len(me.Missing) == 0 {
			t.Fatalf("CheckNetwork on an empty host: %v", err)
		}
		if left := moorLeftovers(t, l); left != "" {
			t.Fatalf("read-only and no-op calls created: %s", left)
		}
	})
}

// TestNetworkUpdate: EnsureNetwork with another bridge name converges: nothing refers
// to the old bridge any more, and the new one is served.
func TestNetworkUpdate(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		old := l.addNetwork("upd", nil)
		moved := l.addBridge("upd", nil)
		must(t, "EnsureNetwork on the new bridge", l.fw.EnsureNetwork(moved.Network))
		must(t, "CheckNetwork", l.fw.CheckNetwork(moved.Network))
		var dump string
		if l.kind == KindNFTables {
			dump = l.inHost("nft", "list", "table", "inet", nftTableName)
		} else {
			dump = l.inHost("iptables-save") + l.inHost("ip6tables-save")
		}
		if strings.Contains(dump, `"`+old.Bridge+`"`) || strings.Contains(dump, " "+old.Bridge+" ") {
			t.Fatalf("rules still name the old bridge %s:\n%s", old.Bridge, dump)
		}
		c := l.addContainer(moved, "m1")
		serveWhoami(t, l.outside, outsidePort)
		expectSeenAs(t, "masquerade on the new bridge", c.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
	})
}

// TestAttachmentRetarget: a re-ADD that keeps the host port but changes the container
// port replaces the DNAT in one operation (nftables: the same map key deleted and added
// in one batch).
func TestAttachmentRetarget(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("re", nil)
		c := l.addContainer(n, "c1")
		serveTag(t, c.ns, "[::]:81", "eighty-one")
		serveWhoami(t, c.ns, whoamiPort)
		l.publish(c, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
		expectSeenAs(t, "first target", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)
		l.publish(c, PortMapping{HostPort: pubPort, ContainerPort: 81})
		expectTag(t, "same host port, new target", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), "eighty-one")
		expectTag(t, "same host port, new target v6", l.outside, "tcp", hostPort(hostOut6.IP, pubPort), "eighty-one")
	})
}

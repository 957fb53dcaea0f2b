package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

func TestBridgeContainersReachEachOther(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("brnet", "mbr0", "10.201.0.0/24", nil)
		ctr1, rt1, res1 := w.attach(list)
		brMAC := res1.Interfaces[0].Mac
		ctr2, rt2, res2 := w.attach(list)
		if res2.Interfaces[0].Mac != brMAC {
			t.Errorf("the bridge's MAC changed from %s to %s when a port was added", brMAC, res2.Interfaces[0].Mac)
		}
		if len(res1.Interfaces) != 3 || res1.Interfaces[2].Sandbox != ctr1.Path() {
			t.Errorf("interfaces %+v", res1.Interfaces)
		}
		ip1, ip2 := ipOf(res1), ipOf(res2)
		if ip1 == "" || ip1 == ip2 {
			t.Fatalf("addresses %q and %q", ip1, ip2)
		}
		for _, c := range []struct {
			from ns.NetNS
			to   string
		}{{ctr1, ip2}, {ctr2, ip1}, {ctr1, "10.201.0.1"}} {
			if err := ping(c.from, c.to); err != nil {
				t.Error(err)
			}
		}
		if err := w.rt.check(list, rt1); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		if err := w.rt.status(list); err != nil {
			t.Errorf("STATUS: %v", err)
		}
		for i := 0; i < 2; i++ {
			if err := w.rt.del(list, rt1); err != nil {
				t.Fatalf("DEL #%d: %v", i+1, err)
			}
		}
		if err := w.rt.del(list, rt2); err != nil {
			t.Fatal(err)
		}
		if n := w.bridgePorts("mbr0"); n != 0 {
			t.Errorf("bridge has %d ports after both DELs", n)
		}
		if r := w.reservations("brnet"); len(r) != 0 {
			t.Errorf("addresses still held: %v", r)
		}
	})
}

func TestBridgeMasquerade(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		serveTCP(t, w.outside, outsideIP+":9000")
		list := w.network("masqnet", "mbr0", "10.202.0.0/24", nil)
		ctr, _, _ := w.attach(list)
		src, err := dialTCP(ctr, outsideIP+":9000")
		if err != nil {
			t.Fatalf("container cannot reach the outside: %v", err)
		}
		if src != hostUplinkIP {
			t.Errorf("the outside saw %s, want the host's address %s", src, hostUplinkIP)
		}
	})
}

func TestBridgeInternalCannotGetOut(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		serveTCP(t, w.outside, outsideIP+":9000")
		list := w.network("intnet", "mbr0", "10.203.0.0/24", map[string]any{"internal": true, "isDefaultGateway": false})
		ctr, _, _ := w.attach(list)
		if _, err := dialTCP(ctr, outsideIP+":9000"); err == nil {
			t.Error("a container on an internal network reached the outside")
		}
		if err := ping(ctr, "10.203.0.1"); err != nil {
			t.Errorf("the gateway must stay reachable: %v", err)
		}
	})
}

func TestBridgeNetworksAreIsolated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		a := w.network("isoa", "mbra", "10.204.0.0/24", nil)
		b := w.network("isob", "mbrb", "10.205.0.0/24", nil)
		ctrA, _, _ := w.attach(a)
		_, _, resB := w.attach(b)
		if err := ping(ctrA, ipOf(resB)); err == nil {
			t.Error("a container reached a container on another network")
		}
		// With isolation off on both, routing between the bridges works.
		c := w.network("isoc", "mbrc", "10.206.0.0/24", map[string]any{"isolation": false})
		d := w.network("isod", "mbrd", "10.207.0.0/24", map[string]any{"isolation": false})
		ctrC, _, _ := w.attach(c)
		_, _, resD := w.attach(d)
		if err := ping(ctrC, ipOf(resD)); err != nil {
			t.Errorf("isolation off: %v", err)
		}
	})
}

func TestBridgePublishedPorts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("portnet", "mbr0", "10.208.0.0/24", nil)
		web, _, _ := w.attach(list, map[string]any{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"})
		serveTCP(t, web, ":80")
		other, _, _ := w.attach(list)
		for _, c := range []struct {
			name string
			from ns.NetNS
			addr string
		}{
			{"from another host", w.outside, hostUplinkIP + ":18080"},
			{"from the host", w.host, hostUplinkIP + ":18080"},
			{"from a container on the network (hairpin)", other, hostUplinkIP + ":18080"},
			{"from the published container itself", web, hostUplinkIP + ":18080"},
		} {
			if _, err := dialTCP(c.from, c.addr); err != nil {
				t.Errorf("%s to %s: %v", c.name, c.addr, err)
			}
		}
		// Without hostIP the host's loopback is left alone, unless the mapping or the
		// network (publishLoopback) asks for it.
		if _, err := dialTCP(w.host, "127.0.0.1:18080"); err == nil {
			t.Error("a port published without hostIP answered on the host's 127.0.0.1")
		}
		lo, _, _ := w.attach(list, map[string]any{"hostPort": 18082, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
		serveTCP(t, lo, ":80")
		if _, err := dialTCP(w.host, "127.0.0.1:18082"); err != nil {
			t.Errorf("hostIP 127.0.0.1 from the host's loopback: %v", err)
		}
		optIn := w.network("portlo", "mbr1", "10.219.0.0/24", map[string]any{"publishLoopback": true})
		both, _, _ := w.attach(optIn, map[string]any{"hostPort": 18083, "containerPort": 80, "protocol": "tcp"})
		serveTCP(t, both, ":80")
		for _, addr := range []string{"127.0.0.1:18083", hostUplinkIP + ":18083"} {
			if _, err := dialTCP(w.host, addr); err != nil {
				t.Errorf("publishLoopback, from the host to %s: %v", addr, err)
			}
		}
		// Bound to hostIP: only that address answers.
		bound, _, _ := w.attach(list, map[string]any{"HostPort": 18081, "ContainerPort": 80, "Protocol": "tcp", "HostIP": hostUplinkIP})
		serveTCP(t, bound, ":80")
		if _, err := dialTCP(w.outside, hostUplinkIP+":18081"); err != nil {
			t.Errorf("hostIP-bound port on its address: %v", err)
		}
		if _, err := dialTCP(w.host, "127.0.0.1:18081"); err == nil {
			t.Error("a port bound to hostIP answered on 127.0.0.1")
		}
		// The same host port again is refused, and the refused ADD leaves nothing.
		linksBefore := w.hostLinks()
		ctr := plugintestNetns(t)
		rt := attachment(ctr, "eth0")
		rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}}
		_, err := w.rt.add(list, rt)
		wantCode(t, err, 103, "18080")
		if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(linksBefore, ",") {
			t.Errorf("refused ADD changed the host's links: %v -> %v", linksBefore, after)
		}
		if r := w.reservations("portnet"); len(r) != 4 {
			t.Errorf("reservations after the refused ADD: %v", r)
		}
	})
}

func TestBridgeExhaustedPoolLeavesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("tiny", "mbr0", "10.209.0.0/30", nil) // .1 gateway, .2 the only address
		_, _, _ = w.attach(list)
		before, rules := w.hostLinks(), w.ruleset()
		ctr := plugintestNetns(t)
		_, err := w.rt.add(list, attachment(ctr, "eth0"))
		wantCode(t, err, 100, "10.209.0.0/30")
		if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("links changed: %v -> %v", before, after)
		}
		if after := w.ruleset(); after != rules {
			t.Errorf("rules changed:\n%s\n---\n%s", rules, after)
		}
		if r := w.reservations("tiny"); len(r) != 1 {
			t.Errorf("reservations: %v", r)
		}
	})
}

func TestBridgeCheckFindsDrift(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("driftnet", "mbr0", "10.210.0.0/24", nil)
		_, rt, _ := w.attach(list, map[string]any{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"})
		if err := w.rt.check(list, rt); err != nil {
			t.Fatalf("CHECK before drift: %v", err)
		}
		// A deleted port rule.
		_ = w.host.Do(func(ns.NetNS) error {
			if w.backend == "iptables" {
				_, err := execOut("iptables", "-t", "nat", "-F", "MOOR-HOSTPORTS")
				return err
			}
			_, err := execOut("nft", "flush", "map", "inet", "moor", "ports4any") // the published ports without hostIP
			return err
		})
		err := w.rt.check(list, rt)
		wantCode(t, err, 110, "18090")

		ctr2, rt2, _ := w.attach(list)
		// A deleted interface.
		_ = ctr2.Do(func(ns.NetNS) error { _, err := execOut("ip", "link", "del", "eth0"); return err })
		err = w.rt.check(list, rt2)
		wantCode(t, err, 110, "eth0 is missing")
	})
}

func TestBridgeDelAfterNetnsGone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("gonenet", "mbr0", "10.211.0.0/24", nil)
		ctr, err := plugintestNamed("moorit-brgone")
		if err != nil {
			t.Fatal(err)
		}
		rt := attachment(ctr, "eth0")
		rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18100, "containerPort": 80}}}
		if _, err := w.rt.add(list, rt); err != nil {
			deleteNetns(ctr)
			t.Fatal(err)
		}
		deleteNetns(ctr)
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL after the netns is gone: %v", err)
		}
		if a := w.fwAttachments("gonenet"); len(a) != 0 {
			t.Errorf("rules left: %v", a)
		}
		if r := w.reservations("gonenet"); len(r) != 0 {
			t.Errorf("addresses left: %v", r)
		}
		if n := w.bridgePorts("mbr0"); n != 0 {
			t.Errorf("%d bridge ports left", n)
		}
	})
}

func TestBridgeGCWithoutRuntimeCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("gcnet", "mbr0", "10.212.0.0/24", nil)
		keep, rtKeep, resKeep := w.attach(list, map[string]any{"hostPort": 18110, "containerPort": 80})
		_, _, _ = w.attach(list, map[string]any{"hostPort": 18111, "containerPort": 80})
		_, _, _ = w.attach(list)
		// A runtime that lost its cache: a fresh libcni with an empty cache dir.
		fresh := newRuntime(t, w.host)
		if err := fresh.gc(list, rtKeep); err != nil {
			t.Fatalf("GC: %v", err)
		}
		if r := w.reservations("gcnet"); len(r) != 1 || !strings.HasPrefix(r[0], rtKeep.ContainerID) {
			t.Errorf("reservations after GC: %v", r)
		}
		if a := w.fwAttachments("gcnet"); len(a) != 1 {
			t.Errorf("rules after GC: %v", a)
		}
		if n := w.bridgePorts("mbr0"); n != 1 {
			t.Errorf("%d bridge ports after GC, want 1", n)
		}
		if err := ping(keep, "10.212.0.1"); err != nil {
			t.Errorf("the kept container lost connectivity: %v (%s)", err, ipOf(resKeep))
		}
		if err := fresh.gc(list); err != nil {
			t.Fatal(err)
		}
		if r, a, n := w.reservations("gcnet"), w.fwAttachments("gcnet"), w.bridgePorts("mbr0"); len(r)+len(a)+n != 0 {
			t.Errorf("after GC with nothing valid: reservations %v rules %v ports %d", r, a, n)
		}
	})
}

func TestBridgeFaultsRollBack(t *testing.T) {
	points := []string{"bridge/after-ipam", "bridge/after-veth", "bridge/after-addresses", "bridge/after-firewall", "ipam/after-reserve"}
	forEachBackend(t, func(t *testing.T, w *world) {
		for i, point := range points {
			t.Run(point, func(t *testing.T) {
				network := fmt.Sprintf("faultnet%d", i)
				bridge := fmt.Sprintf("mbrf%d", i)
				list := w.network(network, bridge, fmt.Sprintf("10.213.%d.0/24", i), nil)
				before, rules := w.hostLinks(), w.ruleset()
				ctr := plugintestNetns(t)
				rt := attachment(ctr, "eth0")
				rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18200 + i, "containerPort": 80}}}
				t.Setenv("MOOR_TEST_FAULT", point)
				if _, err := w.rt.add(list, rt); err == nil {
					t.Fatalf("ADD with %s armed succeeded", point)
				}
				if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(before, ",") {
					t.Errorf("links changed: %v -> %v", before, after)
				}
				if after := w.ruleset(); after != rules {
					t.Errorf("rules changed:\n%s\n---\n%s", rules, after)
				}
				if r := w.reservations(network); len(r) != 0 {
					t.Errorf("addresses left: %v", r)
				}
				t.Setenv("MOOR_TEST_FAULT", "")
				if _, err := w.rt.add(list, rt); err != nil {
					t.Errorf("the next ADD: %v", err)
				}
				// DEL now, so the veth is gone before the next subtest looks at the links.
				if err := w.rt.del(list, rt); err != nil {
					t.Errorf("DEL: %v", err)
				}
			})
		}
	})
}

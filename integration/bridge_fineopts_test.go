package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// IPv6 of the world's uplink, added by the tests that need it.
const (
	hostUplinkIP6 = "2001:db8:250::1"
	outsideIP6    = "2001:db8:250::2"
)

// addUplinkIPv6 gives the host and the outside an IPv6 address on the uplink.
func (w *world) addUplinkIPv6() {
	w.t.Helper()
	for _, s := range []struct {
		netns      ns.NetNS
		link, addr string
	}{{w.host, "mbup0", hostUplinkIP6}, {w.outside, "mbout0", outsideIP6}} {
		err := s.netns.Do(func(ns.NetNS) error {
			l, err := netlinksafe.LinkByName(s.link)
			if err != nil {
				return err
			}
			return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(s.addr), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD})
		})
		if err != nil {
			w.t.Fatalf("IPv6 on %s: %v", s.link, err)
		}
	}
}

// TestBridgeHostBinding: through moor-bridge, on each firewall backend, a mapping without
// hostIP is published on hostBindingIPv4 and hostBindingIPv6 only: the outside reaches it
// there in both families (and the container sees the outside's own address, the answer
// coming back the same way); it does not answer on the host's other addresses. A binding
// of 127.0.0.1 makes the port local to the host: the host reaches it on 127.0.0.1, the
// outside nowhere.
func TestBridgeHostBinding(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		w.addUplinkIPv6()
		dual := func(v4, v6 string) map[string]any {
			return map[string]any{"type": "moor-ipam", "dataDir": w.dataDir,
				"ranges": []any{[]any{map[string]any{"subnet": v4}}, []any{map[string]any{"subnet": v6}}}}
		}
		bound := w.network("hbind", "mbhb0", "", map[string]any{"ipam": dual("10.209.0.0/24", "fd09::/64"),
			"hostBindingIPv4": hostUplinkIP, "hostBindingIPv6": hostUplinkIP6})
		web, _, _ := w.attach(bound, map[string]any{"hostPort": 18190, "containerPort": 80, "protocol": "tcp"})
		serveTCP(t, web, "0.0.0.0:80")
		plugintest.ServeTCPOn(t, web, "tcp6", "[::]:80")
		for _, c := range []struct {
			addr, seen string
		}{{hostUplinkIP + ":18190", outsideIP}, {"[" + hostUplinkIP6 + "]:18190", outsideIP6}} {
			if got, err := dialEventually(w.outside, c.addr); err != nil || got != c.seen {
				t.Errorf("outside to the binding %s: seen as %q, %v; want %s", c.addr, got, err, c.seen)
			}
		}
		for _, addr := range []string{"10.209.0.1:18190", "[fd09::1]:18190"} {
			if got, err := dialTCP(w.host, addr); err == nil {
				t.Errorf("the port answered on the gateway %s (seen as %s) although bound elsewhere", addr, got)
			}
		}

		local := w.network("hlocal", "mbhb1", "10.210.0.0/24", map[string]any{"hostBindingIPv4": "127.0.0.1"})
		db, _, _ := w.attach(local, map[string]any{"hostPort": 18191, "containerPort": 81, "protocol": "tcp"})
		serveTCP(t, db, ":81")
		if _, err := dialEventually(w.host, "127.0.0.1:18191"); err != nil {
			t.Errorf("host to 127.0.0.1:18191 (binding 127.0.0.1): %v", err)
		}
		if got, err := dialTCP(w.outside, hostUplinkIP+":18191"); err == nil {
			t.Errorf("a port bound to 127.0.0.1 answered the outside (seen as %s)", got)
		}
	})
}

// dialEventually is dialTCP tried again for up to ten seconds: a new IPv6 neighbour can
// take the first SYN's whole dial timeout to resolve, and a loaded machine loses some.
func dialEventually(netns ns.NetNS, addr string) (string, error) {
	var got string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if got, err = dialTCP(netns, addr); err == nil {
			return got, nil
		}
	}
	return got, err
}

// TestBridgeNoICCCheck: through moor-bridge, on each firewall backend, icc false keeps
// two containers apart both ways while both reach the gateway; CHECK passes, and names
// (code 110) the bridge's nf_call_iptables once it is turned off.
func TestBridgeNoICCCheck(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("noicc", "mbni0", "10.211.0.0/24", map[string]any{"icc": false})
		c1, rt1, r1 := w.attach(list)
		c2, _, r2 := w.attach(list)
		for _, p := range []struct {
			from ns.NetNS
			to   string
		}{{c1, ipOf(r2)}, {c2, ipOf(r1)}} {
			if err := ping(p.from, p.to); err == nil {
				t.Errorf("icc false: a container reached %s", p.to)
			}
		}
		for _, c := range []ns.NetNS{c1, c2} {
			if err := pingEventually(c, "10.211.0.1"); err != nil {
				t.Errorf("icc false: the gateway does not answer: %v", err)
			}
		}
		if err := w.rt.check(list, rt1); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
		present, err := firewall.BridgeNetfilterPresent(w.host)
		if err != nil {
			t.Fatal(err)
		}
		if !present {
			t.Skip("no br_netfilter: the ports are isolated instead (firewall.TestNoICC)")
		}
		if err := w.host.Do(func(ns.NetNS) error {
			out, err := execOut("ip", "link", "set", "mbni0", "type", "bridge", "nf_call_iptables", "0")
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		err = w.rt.check(list, rt1)
		if cniCode(err) != codes.CheckFailed || !strings.Contains(err.Error(), "nf_call_iptables off") {
			t.Fatalf("CHECK with nf_call_iptables off: %v, want code %d naming it", err, codes.CheckFailed)
		}
		// A failed ADD turns the switch on, then back to what it was (iptables off,
		// ip6tables on); the next ADD turns it on for good.
		before := w.bridgeDetails("mbni0")
		if !strings.Contains(before, "nf_call_iptables 0") || !strings.Contains(before, "nf_call_ip6tables 1") {
			t.Fatalf("bridge options %q, want nf_call_iptables 0 and nf_call_ip6tables 1", before)
		}
		t.Setenv("MOOR_TEST_FAULT", "bridge/after-firewall")
		_, err = w.rt.add(list, attachment(plugintestNetns(t), "eth0"))
		t.Setenv("MOOR_TEST_FAULT", "")
		if err == nil {
			t.Fatal("ADD with a fault point succeeded")
		}
		if after := w.bridgeDetails("mbni0"); after != before {
			t.Errorf("a failed ADD left the bridge changed:\nbefore %s\nafter  %s", before, after)
		}
		w.attach(list)
		if err := w.rt.check(list, rt1); err != nil {
			t.Errorf("CHECK after the next ADD: %v", err)
		}
	})
}

// bridgeDetails is the bridge's nf_call options as `ip -d link` shows them.
func (w *world) bridgeDetails(bridge string) string {
	w.t.Helper()
	var out []byte
	if err := w.host.Do(func(ns.NetNS) error {
		var err error
		out, err = execOut("ip", "-d", "link", "show", bridge)
		return err
	}); err != nil {
		w.t.Fatal(err)
	}
	var keep []string
	f := strings.Fields(string(out))
	for i := range f {
		if strings.HasPrefix(f[i], "nf_call_") && i+1 < len(f) {
			keep = append(keep, f[i]+" "+f[i+1])
		}
	}
	return strings.Join(keep, ", ")
}

// pingEventually is ping tried again for up to ten seconds.
func pingEventually(netns ns.NetNS, ip string) error {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = ping(netns, ip); err == nil {
			return nil
		}
	}
	return err
}

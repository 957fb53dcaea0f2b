package masq_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/overlay/masq"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// link makes a veth from host (name) to peer (eth0) with the addresses given and a default
// route in peer via hostAddr.
func link(t *testing.T, host, peer ns.NetNS, name, hostAddr, peerAddr string, defaultRoute bool) {
	t.Helper()
	gw := ""
	if defaultRoute {
		gw, _, _ = strings.Cut(hostAddr, "/")
	}
	plugintest.Veth(t, host, peer, plugintest.VethSpec{HostName: name, HostAddr: hostAddr, PeerAddr: peerAddr, Gateway: gw})
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// whoami serves, in n, one line per connection: the source address the server saw.
func whoami(t *testing.T, n ns.NetNS, addr string) {
	t.Helper()
	var l net.Listener
	if err := n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintln(c, host)
			c.Close()
		}
	}()
}

// duplicate adds a copy of the table's rule, comment included, with the nft command.
func duplicate(t *testing.T, host ns.NetNS) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(host.Path()), "nft", "list", "chain", "ip", masq.TableName, masq.ChainName).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	_, rest, _ := strings.Cut(string(out), "comment \"")
	comment, _, _ := strings.Cut(rest, "\"")
	add := exec.Command("ip", "netns", "exec", filepath.Base(host.Path()), "nft", "add", "rule", "ip", masq.TableName, masq.ChainName,
		"ip", "saddr", "10.240.1.0/24", "masquerade", "comment", `"`+comment+`"`)
	if out, err := add.CombinedOutput(); err != nil || comment == "" {
		t.Fatalf("nft add (comment %q): %v: %s", comment, err, out)
	}
}

func seenAs(t *testing.T, from ns.NetNS, addr string) string {
	t.Helper()
	var line string
	err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		return "unreachable"
	}
	return strings.TrimSpace(line)
}

// rig is a host routing between a container (10.240.1.2 behind vctr), a peer in the
// overlay's range (10.240.2.2 behind vpeer, serving whoami on port 7000) and an outside
// (192.168.9.2, with no route back to the range).
func rig(t *testing.T) (host, ctr, peer, outside ns.NetNS) {
	t.Helper()
	host = plugintest.Netns(t, "moormq")
	ctr = plugintest.Netns(t, "moormq")
	peer = plugintest.Netns(t, "moormq")
	outside = plugintest.Netns(t, "moormq")
	link(t, host, ctr, "vctr", "10.240.1.1/24", "10.240.1.2/24", true)
	link(t, host, peer, "vpeer", "10.240.2.1/24", "10.240.2.2/24", true)
	link(t, host, outside, "vout", "192.168.9.1/24", "192.168.9.2/24", false)
	if err := firewall.ApplySysctls(host, []firewall.Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
	whoami(t, peer, "10.240.2.2:7000")
	return host, ctr, peer, outside
}

func TestMasqueradeLeavesTheRangeOnly(t *testing.T) {
	host, ctr, _, outside := rig(t)
	whoami(t, outside, "192.168.9.2:7000")
	if got := seenAs(t, ctr, "192.168.9.2:7000"); got != "unreachable" {
		t.Fatalf("outside answered (%s) before any masquerade: it must have no route back", got)
	}
	r := masq.Rule{Network: "ov", HostSubnet: netip.MustParsePrefix("10.240.1.0/24"), Range: netip.MustParsePrefix("10.240.0.0/16")}
	fd := int(host.Fd())
	created, err := masq.Ensure(fd, r)
	if err != nil || !created {
		t.Fatalf("Ensure: created %v err %v", created, err)
	}
	if created, err = masq.Ensure(fd, r); err != nil || created {
		t.Fatalf("second Ensure: created %v err %v, want no change", created, err)
	}
	if got := seenAs(t, ctr, "192.168.9.2:7000"); got != "192.168.9.1" {
		t.Fatalf("outside saw %s, want the host's 192.168.9.1", got)
	}
	if got := seenAs(t, ctr, "10.240.2.2:7000"); got != "10.240.1.2" {
		t.Fatalf("a peer inside the range saw %s, want the container's own 10.240.1.2", got)
	}
	if ok, err := masq.Present(fd, r); !ok || err != nil {
		t.Fatalf("Present = %v, %v", ok, err)
	}
	// Two ADDs racing can both add the rule; the next Ensure leaves one.
	duplicate(t, host)
	if ok, _ := masq.Present(fd, r); ok {
		t.Fatal("Present with a duplicate rule")
	}
	if _, err := masq.Ensure(fd, r); err != nil {
		t.Fatal(err)
	}
	if ok, err := masq.Present(fd, r); !ok || err != nil {
		t.Fatalf("after Ensure removed the duplicate: Present = %v, %v", ok, err)
	}
	moved := r
	moved.HostSubnet = netip.MustParsePrefix("10.240.7.0/24")
	if created, err = masq.Ensure(fd, moved); err != nil || created {
		t.Fatalf("Ensure with a new host subnet: created %v err %v, want a replacement", created, err)
	}
	if ok, _ := masq.Present(fd, r); ok {
		t.Fatal("the old rule survived its replacement")
	}
	if err := masq.Remove(fd, "ov"); err != nil {
		t.Fatal(err)
	}
	if got := seenAs(t, ctr, "192.168.9.2:7000"); got != "unreachable" {
		t.Fatalf("after Remove outside still answered (%s)", got)
	}
	if err := masq.Remove(fd, "ov"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

// TestNoICC: the icc rule stops new connections from the bridge (here the container's
// own host link) to the overlay's range, and nothing else: connections towards the
// container still work (their replies pass), as does traffic to outside the range. It
// lives beside the masquerade without disturbing it, and goes with RemoveNoICC.
func TestNoICC(t *testing.T) {
	host, ctr, peer, outside := rig(t)
	whoami(t, ctr, "10.240.1.2:7000")
	whoami(t, outside, "192.168.9.2:7000")
	fd := int(host.Fd())
	m := masq.Rule{Network: "ov", HostSubnet: netip.MustParsePrefix("10.240.1.0/24"), Range: netip.MustParsePrefix("10.240.0.0/16")}
	if _, err := masq.Ensure(fd, m); err != nil {
		t.Fatal(err)
	}
	if got := seenAs(t, ctr, "10.240.2.2:7000"); got != "10.240.1.2" {
		t.Fatalf("before the icc rule the peer saw %s", got)
	}
	r := masq.NoICC{Network: "ov", Bridge: "vctr", Range: m.Range}
	if created, err := masq.EnsureNoICC(fd, r); err != nil || !created {
		t.Fatalf("EnsureNoICC: created %v err %v", created, err)
	}
	if created, err := masq.EnsureNoICC(fd, r); err != nil || created {
		t.Fatalf("second EnsureNoICC: created %v err %v, want no change", created, err)
	}
	if got := seenAs(t, ctr, "10.240.2.2:7000"); got != "unreachable" {
		t.Fatalf("icc false: the container reached a peer in the range (seen as %s)", got)
	}
	if got := seenAs(t, peer, "10.240.1.2:7000"); got != "10.240.2.2" {
		t.Fatalf("icc false: a connection towards the container got %q, want its answer", got)
	}
	if got := seenAs(t, ctr, "192.168.9.2:7000"); got != "192.168.9.1" {
		t.Fatalf("icc false: outside the range saw %s, want the masqueraded 192.168.9.1", got)
	}
	if ok, err := masq.PresentNoICC(fd, r); !ok || err != nil {
		t.Fatalf("PresentNoICC = %v, %v", ok, err)
	}
	other := r
	other.Bridge = "vother"
	if ok, _ := masq.PresentNoICC(fd, other); ok {
		t.Fatal("PresentNoICC for another bridge")
	}
	// The masquerade goes; the icc rule (and so the table) stays.
	if err := masq.Remove(fd, "ov"); err != nil {
		t.Fatal(err)
	}
	if ok, err := masq.PresentNoICC(fd, r); !ok || err != nil {
		t.Fatalf("after the masquerade's removal PresentNoICC = %v, %v", ok, err)
	}
	if err := masq.RemoveNoICC(fd, "ov"); err != nil {
		t.Fatal(err)
	}
	if got := seenAs(t, ctr, "10.240.2.2:7000"); got != "10.240.1.2" {
		t.Fatalf("after RemoveNoICC the peer saw %s", got)
	}
	if out, err := exec.Command("ip", "netns", "exec", filepath.Base(host.Path()), "nft", "list", "table", "ip", masq.TableName).CombinedOutput(); err == nil {
		t.Fatalf("table %s left after its last rule:\n%s", masq.TableName, out)
	}
}

// TestSNATAddress: with Rule.SNAT traffic leaving the range goes out with that source
// (the outside answers it), traffic inside the range keeps its own; back to plain
// masquerade by the next Ensure.
func TestSNATAddress(t *testing.T) {
	host, ctr, _, outside := rig(t)
	whoami(t, outside, "192.168.9.2:7000")
	hh, hns, err := plugins.NetlinkAt(host.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer hns.Close()
	defer hh.Close()
	vout, err := hh.LinkByName("vout")
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.AddrAdd(vout, mustAddr("192.168.9.77/32")); err != nil {
		t.Fatal(err)
	}
	fd := int(host.Fd())
	r := masq.Rule{Network: "ov", HostSubnet: netip.MustParsePrefix("10.240.1.0/24"), Range: netip.MustParsePrefix("10.240.0.0/16"),
		SNAT: netip.MustParseAddr("192.168.9.77")}
	if _, err := masq.Ensure(fd, r); err != nil {
		t.Fatal(err)
	}
	if got := seenAs(t, ctr, "192.168.9.2:7000"); got != "192.168.9.77" {
		t.Fatalf("outside saw %s, want the snatAddress 192.168.9.77", got)
	}
	if got := seenAs(t, ctr, "10.240.2.2:7000"); got != "10.240.1.2" {
		t.Fatalf("a peer inside the range saw %s, want the container's own 10.240.1.2", got)
	}
	plain := r
	plain.SNAT = netip.Addr{}
	if ok, _ := masq.Present(fd, plain); ok {
		t.Fatal("the SNAT rule reads as plain masquerade")
	}
	if _, err := masq.Ensure(fd, plain); err != nil {
		t.Fatal(err)
	}
	if got := seenAs(t, ctr, "192.168.9.2:7000"); got != "192.168.9.1" {
		t.Fatalf("after going back to masquerade the outside saw %s, want 192.168.9.1", got)
	}
	if err := masq.Remove(fd, "ov"); err != nil {
		t.Fatal(err)
	}
}

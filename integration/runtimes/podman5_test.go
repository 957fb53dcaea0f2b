package runtimes

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/plugins/plugintest"
)

// TestPodman5 is the podman 5 lane: podman 5.4 and netavark 1.14 from Debian 13 (see
// podman5_env_test.go) with moor-netavark as netavark's external plugin, and netavark's
// own bridge beside it. Each scenario compares the host before and after (watchHost).
func TestPodman5(t *testing.T) {
	needSuite(t)
	trixieRoot(t) // one skip, naming the cause, when there is no root
	t.Run("moor-bridge", func(t *testing.T) { p5Reach(t, "moor-bridge") })
	t.Run("netavark-bridge", func(t *testing.T) { p5Reach(t, "bridge") })
	t.Run("moor-macvlan", p5Macvlan)
	t.Run("exhausted-pool", p5ExhaustedPool)
	t.Run("recreated-network", p5Recreated)
	t.Run("setup-time", p5SetupTime)
}

// p5Net is a network the scenario creates with podman network create.
type p5Net struct {
	Name, Bridge string
	Subnet       *net.IPNet
	Gateway      string
}

// newP5Net picks a free subnet and names for a network (created by create).
func newP5Net(t *testing.T) *p5Net {
	t.Helper()
	name, subnet, gw := freeNetwork(t)
	return &p5Net{Name: name, Bridge: name, Subnet: subnet, Gateway: gw.String()}
}

// create runs podman network create and checks that ls and inspect show the network.
func (p *podman5) create(n *p5Net, driver string, extra ...string) {
	p.t.Helper()
	args := append([]string{"network", "create", "--driver", driver, "--subnet", n.Subnet.String(), "--interface-name", n.Bridge}, extra...)
	p.must(append(args, n.Name)...)
	if ls := p.must("network", "ls", "--format", "{{.Name}} {{.Driver}}"); !strings.Contains(ls, n.Name+" "+driver) {
		p.t.Fatalf("podman network ls does not list %s as a %s network:\n%s", n.Name, driver, ls)
	}
	var inspected []struct {
		Name    string `json:"name"`
		Driver  string `json:"driver"`
		Subnets []struct {
			Subnet, Gateway string
		} `json:"subnets"`
	}
	out := p.must("network", "inspect", n.Name)
	if err := json.Unmarshal([]byte(out), &inspected); err != nil || len(inspected) != 1 || inspected[0].Driver != driver ||
		len(inspected[0].Subnets) != 1 || inspected[0].Subnets[0].Subnet != n.Subnet.String() || inspected[0].Subnets[0].Gateway != n.Gateway {
		p.t.Fatalf("podman network inspect %s: %s (%v)", n.Name, out, err)
	}
}

// start runs a detached busybox container on network n.
func (p *podman5) start(n *p5Net, name string, extra []string, cmd ...string) {
	p.t.Helper()
	args := append([]string{"run", "--detach", "--name", name, "--network", n.Name, "--cap-add", "NET_RAW"}, extra...)
	p.must(append(append(args, busyboxImage), cmd...)...)
}

func (p *podman5) ipOf(ctr string, n *p5Net) string {
	p.t.Helper()
	return p.must("inspect", "--format", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, n.Name), ctr)
}

// netnsOf returns the host path of a container's network namespace.
func (p *podman5) netnsOf(ctr string) string {
	p.t.Helper()
	return p.inside(p.must("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", ctr))
}

// moorState lists what moor-netavark holds for network name: IPAM reservations, DNS
// records, cached results; empty when nothing.
func (p *podman5) moorState(name string) []string {
	p.t.Helper()
	var out []string
	if db := p.inside("/run/moor/netavark/ipam/" + name + ".db"); fileExists(db) {
		st, err := local.Open(local.Options{Path: db})
		if err != nil {
			p.t.Fatal(err)
		}
		atts, err := st.List(context.Background())
		st.Close()
		if err != nil {
			p.t.Fatal(err)
		}
		for _, a := range atts {
			out = append(out, fmt.Sprintf("reservation %s %v", a.Key, a.IPs))
		}
	}
	if dir := p.inside("/run/moor/dns"); fileExists(dir) {
		st, err := records.NewLocal(dir)
		if err != nil {
			p.t.Fatal(err)
		}
		recs, _ := st.List(context.Background(), name)
		st.Close()
		for _, r := range recs {
			out = append(out, fmt.Sprintf("DNS record %s %v", r.Names, r.IPs))
		}
	}
	cached, _ := filepath.Glob(p.inside("/run/moor/netavark/cache/results/" + name + "-*"))
	for _, c := range cached {
		out = append(out, "cached result "+filepath.Base(c))
	}
	return out
}

// p5Reach: two containers on a bridge network of driver (moor-bridge or netavark's
// bridge) reach each other by address and by name, a published port answers from the
// host (on the gateway; on 127.0.0.1 with netavark's bridge only, see the README on
// published ports), and podman rm + network rm leave the host as it was.
func p5Reach(t *testing.T, driver string) {
	watchHost(t)
	p := newPodman5(t)
	n := newP5Net(t)
	p.create(n, driver)
	port := freePort(t)
	p.start(n, "web", []string{"--publish", fmt.Sprintf("%d:%d", port, webPort)}, "httpd", "-f", "-p", fmt.Sprint(webPort), "-h", "/www")
	p.start(n, "db", nil, "sleep", "600")
	webIP, dbIP := p.ipOf("web", n), p.ipOf("db", n)
	domain := dnsDomain
	if driver == "bridge" {
		domain = "dns.podman"
	}
	wantReach(t, p, n.Gateway, domain, webIP)
	dbNS := p.netnsOf("db")
	wantName(t, dbNS, n.Gateway, "web", webIP)
	wantName(t, p.netnsOf("web"), n.Gateway, "db."+domain, dbIP)
	wantNoName(t, dbNS, n.Gateway, "nosuch."+domain)
	wantServed(t, hostPort(n.Gateway, port))
	if driver == "bridge" {
		wantServed(t, hostPort("127.0.0.1", port))
	} else if body, err := httpGet(hostPort("127.0.0.1", port)); err == nil {
		// moor publishes a port without hostIP on every address but loopback.
		t.Errorf("moor's published port answers on 127.0.0.1: %q", body)
	}

	p.must("rm", "--force", "--time", "0", "web", "db")
	if driver != "bridge" {
		if left := p.moorState(n.Name); len(left) > 0 {
			t.Errorf("after podman rm, moor still holds for %s:\n%s", n.Name, strings.Join(left, "\n"))
		}
	}
	if _, err := netlinksafe.LinkByName(n.Bridge); err == nil {
		t.Errorf("bridge %s left after the last container went", n.Bridge)
	}
	p.must("network", "rm", n.Name)
	if ls := p.must("network", "ls", "--format", "{{.Name}}"); strings.Contains(ls, n.Name) {
		t.Errorf("network %s still listed after network rm:\n%s", n.Name, ls)
	}
	if driver != "bridge" {
		p5DefaultSubnets(t, p)
	}
}

// p5DefaultSubnets: networks created without --subnet get subnets no other network of
// podman's has (create reads podman's network files). Creating touches no kernel state.
func p5DefaultSubnets(t *testing.T, p *podman5) {
	seen := map[string]string{}
	for i := 0; i < 2; i++ {
		name := bridgePrefix + plugintest.RandomSuffix()
		p.must("network", "create", "--driver", "moor-bridge", name)
		subnet := p.must("network", "inspect", "--format", "{{range .Subnets}}{{.Subnet}}{{end}}", name)
		if other, ok := seen[subnet]; ok || subnet == "" {
			t.Errorf("network %s got subnet %q, which %s has too", name, subnet, other)
		}
		seen[subnet] = name
	}
	for _, name := range seen {
		p.must("network", "rm", name)
	}
}

// p5Macvlan: a moor-macvlan network on a parent the test makes (one end of a veth pair:
// the kernel here has no dummy links): two containers reach each other by address;
// podman rm and network rm leave nothing.
func p5Macvlan(t *testing.T) {
	watchHost(t)
	p := newPodman5(t)
	n := newP5Net(t)
	parent := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge}, PeerName: n.Bridge + "p"}
	if err := netlink.LinkAdd(parent); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(parent); err != nil {
			t.Errorf("deleting %s: %v", parent.Name, err)
		}
	})
	// Both ends up: a veth without a carrier carries nothing for its macvlans either.
	for _, name := range []string{parent.Name, parent.PeerName} {
		l, err := netlinksafe.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	p.create(n, "moor-macvlan", "--disable-dns")
	p.start(n, "a", nil, "sleep", "600")
	p.start(n, "b", nil, "sleep", "600")
	bIP := p.ipOf("b", n)
	if out, err := p.run("exec", "a", "ping", "-c", "1", "-W", "2", bIP); err != nil {
		t.Errorf("a cannot ping b (%s): %v %s", bIP, err, out)
	}
	if kind, err := linkType(p.netnsOf("a"), "eth0"); err != nil || kind != "macvlan" {
		t.Errorf("a's eth0: type %q (%v), want macvlan", kind, err)
	}
	p.must("rm", "--force", "--time", "0", "a", "b")
	if left := p.moorState(n.Name); len(left) > 0 {
		t.Errorf("after podman rm, moor still holds:\n%s", strings.Join(left, "\n"))
	}
	p.must("network", "rm", n.Name)
}

// p5ExhaustedPool: on a network whose addresses moor-ipam allocates (ipam driver
// moor-ipam in the network's file: podman's CLI does not offer it) a /30 holds one
// container; the second gets moor's error through podman, and the host and moor's state
// are exactly as before the attempt.
func p5ExhaustedPool(t *testing.T) {
	watchHost(t)
	p := newPodman5(t)
	n := newP5Net(t)
	n.Subnet.Mask = net.CIDRMask(30, 32)
	p.create(n, "moor-bridge")
	file := filepath.Join(p.dir, "networks", n.Name+".json")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(data), `"host-local"`, `"moor-ipam"`, 1)), fileMode); err != nil {
		t.Fatal(err)
	}
	p.start(n, "first", nil, "sleep", "600")
	if ip := p.ipOf("first", n); ip != strings.TrimSuffix(n.Gateway, ".1")+".2" {
		t.Errorf("first container's address %s, want the /30's only free one", ip)
	}
	waitLinkLocal(t, n.Bridge)
	before, err := takeHostState()
	if err != nil {
		t.Fatal(err)
	}
	stateBefore := p.moorState(n.Name)
	_, err = p.run("run", "--detach", "--name", "second", "--network", n.Name, busyboxImage, "sleep", "600")
	if err == nil {
		t.Fatal("a second container on a full /30 started")
	}
	for _, want := range []string{`plugin "moor-bridge" failed`, "addresses in use", "(CNI code"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("podman's error does not say %q:\n%v", want, err)
		}
	}
	after, err := takeHostState()
	if err != nil {
		t.Fatal(err)
	}
	if d := before.diff(after); len(d) > 0 {
		t.Errorf("the failed setup left:\n%s", strings.Join(d, "\n"))
	}
	if s := p.moorState(n.Name); strings.Join(s, "\n") != strings.Join(stateBefore, "\n") {
		t.Errorf("moor's state after the failed setup:\n%s\nwant as before:\n%s", strings.Join(s, "\n"), strings.Join(stateBefore, "\n"))
	}
	p.must("rm", "--force", "--time", "0", "first", "second")
	p.must("network", "rm", n.Name)
}

// p5Recreated: a container's teardown fails (its netns mount is taken away, so netavark
// cannot enter it: what happens when podman's commands run in different mount
// namespaces), podman removes the container and the network anyway, and a network of the
// same name is created again. Podman hands the next container the same address; moor
// must accept it, and after everything is removed nothing is left.
func p5Recreated(t *testing.T) {
	watchHost(t)
	p := newPodman5(t)
	n := newP5Net(t)
	p.create(n, "moor-bridge")
	p.start(n, "lost", nil, "sleep", "600")
	lostIP := p.ipOf("lost", n)
	sandbox := p.must("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", "lost")
	if _, err := p.exec("umount", sandbox); err != nil {
		t.Fatal(err)
	}
	// The teardown fails; podman may or may not report it, and removes the container.
	_, rmErr := p.run("rm", "--force", "--time", "0", "lost")
	t.Logf("podman rm after the netns was taken away: %v", rmErr)
	if out, _ := p.run("ps", "--all", "--format", "{{.Names}}"); strings.Contains(out, "lost") {
		p.must("rm", "--force", "--time", "0", "lost")
	}
	if left := p.moorState(n.Name); len(left) == 0 {
		t.Fatal("the failed teardown left nothing: the scenario did not happen")
	}
	p.must("network", "rm", "--force", n.Name)
	p.create(n, "moor-bridge")
	// The address podman handed the lost container (podman's own allocator may or may not
	// pick it again: ask for it).
	p.start(n, "next", []string{"--ip", lostIP}, "sleep", "600")
	wantName(t, p.netnsOf("next"), n.Gateway, "next", lostIP)
	p.must("rm", "--force", "--time", "0", "next")
	if left := p.moorState(n.Name); len(left) > 0 {
		t.Errorf("after podman rm, moor still holds:\n%s", strings.Join(left, "\n"))
	}
	p.must("network", "rm", n.Name)
}

// linkLocalWait bounds the wait for IPv6 link-local addresses (duplicate address
// detection takes a second or two).
const linkLocalWait = 10 * time.Second

// waitLinkLocal waits until the bridge and its ports have their IPv6 link-local
// addresses (and so their local routes), which the kernel adds after a link comes up:
// a snapshot taken before would see them appear later.
func waitLinkLocal(t *testing.T, bridge string) {
	t.Helper()
	deadline := time.Now().Add(linkLocalWait)
	for {
		pending := pendingLinkLocal(bridge)
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IPv6 link-local address on %v after %s", pending, linkLocalWait)
		}
		time.Sleep(pollInterval)
	}
}

// pendingLinkLocal lists the bridge and its ports that have IPv6 on but no settled
// link-local address yet.
func pendingLinkLocal(bridge string) []string {
	br, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return nil
	}
	links := []netlink.Link{br}
	all, _ := netlinksafe.LinkList()
	for _, l := range all {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			links = append(links, l)
		}
	}
	var pending []string
	for _, l := range links {
		name := l.Attrs().Name
		if v, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")); err != nil || strings.TrimSpace(string(v)) == "1" {
			continue
		}
		addrs, _ := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		settled := false
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				settled = true
			}
		}
		if !settled {
			pending = append(pending, name)
		}
	}
	return pending
}

// linkType returns the type of link name in the netns at nsPath.
func linkType(nsPath, name string) (string, error) {
	netns, err := ns.GetNS(nsPath)
	if err != nil {
		return "", err
	}
	defer netns.Close()
	var kind string
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(name)
		if err == nil {
			kind = l.Type()
		}
		return err
	})
	return kind, err
}

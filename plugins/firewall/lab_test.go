package firewall

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab: a "host" netns with one bridge per network and a veth "out0" to an
// "outside" netns (the internet, which has no route to any container subnet, so only
// masqueraded traffic gets answers), and one netns per container.
var (
	hostOut4    = mustCIDRAddr("192.0.2.1/24")
	outside4    = mustCIDRAddr("192.0.2.2/24")
	hostOut6    = mustCIDRAddr("2001:db8::1/64")
	outside6    = mustCIDRAddr("2001:db8::2/64")
	labBackends = []string{KindNFTables, KindIPTables}
)

const (
	brNFCall4   = "net/bridge/bridge-nf-call-iptables"
	brNFCall6   = "net/bridge/bridge-nf-call-ip6tables"
	hostOutLink = "out0"
	ctrLink     = "eth0"
	gatewayHost = 1 // gateway is .1 / ::1 of each subnet
	// labReadyWithin bounds the wait for the kernel to finish a link's IPv6 setup (a
	// generous "eventually": milliseconds on an idle machine).
	labReadyWithin = 15 * time.Second
)

func mustCIDRAddr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables, iptables)")
	}
}

type lab struct {
	t       testing.TB
	kind    string
	host    ns.NetNS
	outside ns.NetNS
	hostNL  *netlink.Handle
	fw      Backend
	index   int
}

type labNet struct {
	Network
	gw4, gw6 net.IP
	next     int
}

type container struct {
	name     string
	ns       ns.NetNS
	ip4, ip6 net.IP
	hostVeth string
	net      *labNet
}

func newNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := ns.TempNetNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func handleAt(t testing.TB, n ns.NetNS) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// newLab builds host and outside and a backend of the given kind working in host.
func newLab(t testing.TB, kind string) *lab {
	t.Helper()
	requireRoot(t)
	l := &lab{t: t, kind: kind, host: newNS(t), outside: newNS(t)}
	l.hostNL = handleAt(t, l.host)
	outNL := handleAt(t, l.outside)
	l.noLinkLocalDAD(l.host)
	l.noLinkLocalDAD(l.outside)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostOutLink}, PeerName: ctrLink,
		PeerNamespace: netlink.NsFd(int(l.outside.Fd()))}
	must(t, "add outside veth", l.hostNL.LinkAdd(veth))
	l.upWithAddrs(l.hostNL, hostOutLink, hostOut4, hostOut6)
	l.upWithAddrs(outNL, ctrLink, outside4, outside6)
	for _, h := range []*netlink.Handle{l.hostNL, outNL} {
		lo, err := h.LinkByName("lo")
		must(t, "find lo", err)
		must(t, "lo up", h.LinkSetUp(lo))
	}
	l.ipv6Ready(l.hostNL, hostOutLink, true)
	l.ipv6Ready(outNL, ctrLink, true)
	fw, err := New(kind, Options{NetNS: l.host, LockFile: filepath.Join(t.TempDir(), "fw.lock")})
	must(t, "new backend "+kind, err)
	l.fw = fw
	if kind == KindIPTables {
		// A Docker-style host: forwarding is dropped unless a rule accepts it, which is
		// what the iptables backend's ACCEPT rules are for.
		l.inHost("iptables", "-P", "FORWARD", "DROP")
		l.inHost("ip6tables", "-P", "FORWARD", "DROP")
	}
	return l
}

// inHost runs a command inside the host netns.
func (l *lab) inHost(name string, args ...string) string {
	l.t.Helper()
	var out []byte
	err := l.host.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	must(l.t, fmt.Sprintf("%s %v: %s", name, args, out), err)
	return string(out)
}

// bridgeNetfilter turns br_netfilter's hooks for bridged IPv4/IPv6 frames on or off in
// the host netns, when the module is loaded (the sysctls are per netns). It reports
// whether the setting exists.
func (l *lab) bridgeNetfilter(on bool) bool {
	l.t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	var exists bool
	err := l.host.Do(func(ns.NetNS) error {
		_, err := os.Stat(filepath.Join(procSys, brNFCall4))
		exists = err == nil
		return nil
	})
	must(l.t, "stat br_netfilter sysctl", err)
	if !exists {
		return false
	}
	must(l.t, "br_netfilter sysctls", ApplySysctls(l.host, []Sysctl{{Path: brNFCall4, Value: v}, {Path: brNFCall6, Value: v}}))
	return true
}

// upWithAddrs adds the addresses (without DAD) to the link, sets it up and waits until
// its IPv6 addresses are ready (see ipv6Ready).
func (l *lab) upWithAddrs(h *netlink.Handle, name string, addrs ...*net.IPNet) {
	l.t.Helper()
	link, err := h.LinkByName(name)
	must(l.t, "find "+name, err)
	var v6 []net.IP
	for _, a := range addrs {
		must(l.t, fmt.Sprintf("address %s on %s", a, name),
			h.AddrAdd(link, &netlink.Addr{IPNet: a, Flags: unix.IFA_F_NODAD}))
		if a.IP.To4() == nil {
			v6 = append(v6, a.IP)
		}
	}
	must(l.t, name+" up", h.LinkSetUp(link))
	l.ipv6Ready(h, name, false, v6...)
}

// addNetwork is addBridge followed by EnsureNetwork.
func (l *lab) addNetwork(name string, edit func(*Network)) *labNet {
	l.t.Helper()
	n := l.addBridge(name, edit)
	must(l.t, "EnsureNetwork "+name, l.fw.EnsureNetwork(n.Network))
	return n
}

// addBridge creates a bridge with gateways 10.10.<i>.1/24 and fd10:<i>::1/64 and sets the
// sysctls RequiredSysctls names; no firewall rule yet.
func (l *lab) addBridge(name string, edit func(*Network)) *labNet {
	l.t.Helper()
	l.index++
	n := &labNet{next: gatewayHost + 1}
	sub4 := mustCIDRAddr(fmt.Sprintf("10.10.%d.1/24", l.index))
	sub6 := mustCIDRAddr(fmt.Sprintf("fd10:%d::1/64", l.index))
	n.gw4, n.gw6 = sub4.IP, sub6.IP
	n.Network = Network{Name: name, Bridge: fmt.Sprintf("br%d", l.index),
		Subnets: []*net.IPNet{sub4, sub6}, IPMasq: true, Isolate: true, Gateways: []net.IP{sub4.IP, sub6.IP}}
	if edit != nil {
		edit(&n.Network)
	}
	must(l.t, "add bridge", l.hostNL.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge}}))
	l.upWithAddrs(l.hostNL, n.Bridge, sub4, sub6)
	must(l.t, "sysctls", ApplySysctls(l.host, RequiredSysctls(n.Network)))
	return n
}

// addContainer plugs a new netns into the network's bridge, with the next addresses
// and default routes via the gateways.
func (l *lab) addContainer(n *labNet, name string) *container {
	l.t.Helper()
	c := &container{name: name, ns: newNS(l.t), net: n, hostVeth: "v" + name}
	l.noLinkLocalDAD(c.ns)
	host := n.next
	n.next++
	c.ip4 = net.IPv4(10, 10, n.gw4.To4()[2], byte(host)).To4()
	c.ip6 = append(net.IP{}, n.gw6...)
	c.ip6[len(c.ip6)-1] = byte(host)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: c.hostVeth}, PeerName: ctrLink,
		PeerNamespace: netlink.NsFd(int(c.ns.Fd()))}
	must(l.t, "add container veth", l.hostNL.LinkAdd(veth))
	hv, err := l.hostNL.LinkByName(c.hostVeth)
	must(l.t, "find host veth", err)
	br, err := l.hostNL.LinkByName(n.Bridge)
	must(l.t, "find bridge", err)
	must(l.t, "enslave", l.hostNL.LinkSetMaster(hv, br))
	must(l.t, "host veth up", l.hostNL.LinkSetUp(hv))
	h := handleAt(l.t, c.ns)
	l.upWithAddrs(h, ctrLink, &net.IPNet{IP: c.ip4, Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: c.ip6, Mask: net.CIDRMask(64, 128)})
	lo, err := h.LinkByName("lo")
	must(l.t, "find lo", err)
	must(l.t, "lo up", h.LinkSetUp(lo))
	eth, err := h.LinkByName(ctrLink)
	must(l.t, "find eth0", err)
	for _, gw := range []net.IP{n.gw4, n.gw6} {
		must(l.t, "default route", h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw}))
	}
	l.ipv6Ready(h, ctrLink, true)
	l.ipv6Ready(l.hostNL, n.Bridge, true) // the bridge has a carrier now, and so a link-local address
	return c
}

// noLinkLocalDAD turns duplicate address detection off for the links made later in netns
// (accept_dad 0 for all and default). The lab's addresses are added with IFA_F_NODAD, but
// the link-local address the kernel makes when a link gets its carrier runs DAD (1-2 s,
// longer on a loaded machine), and until it is done a router sends no neighbour
// solicitation for forwarded traffic whose source is not its own (DNAT'd packets to a
// container that never sent anything): the neighbour fails and the client gets "no route
// to host". Every lab address is unique by construction, so there is nothing to detect.
func (l *lab) noLinkLocalDAD(netns ns.NetNS) {
	l.t.Helper()
	must(l.t, "accept_dad", ApplySysctls(netns, []Sysctl{
		{Path: "net/ipv6/conf/all/accept_dad", Value: "0"}, {Path: "net/ipv6/conf/default/accept_dad", Value: "0"}}))
}

// ipv6Ready waits until the kernel is done configuring IPv6 on the link: each address has
// its local route (the kernel delivers to it and answers neighbour solicitations for it;
// even with IFA_F_NODAD both come from a deferred work item that waits for the RTNL lock,
// which can take seconds on a busy machine) and, with linkLocal, the link has a
// link-local address out of DAD (needs the carrier; see noLinkLocalDAD).
func (l *lab) ipv6Ready(h *netlink.Handle, name string, linkLocal bool, addrs ...net.IP) {
	l.t.Helper()
	link, err := h.LinkByName(name)
	must(l.t, "find "+name, err)
	missing := func() string {
		for _, a := range addrs {
			rs, err := h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_LOCAL,
				Dst: &net.IPNet{IP: a, Mask: net.CIDRMask(128, 128)}}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
			if err != nil || len(rs) == 0 {
				return fmt.Sprintf("local route of %s (%v)", a, err)
			}
		}
		if !linkLocal {
			return ""
		}
		as, err := h.AddrList(link, netlink.FAMILY_V6)
		for _, a := range as {
			if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return ""
			}
		}
		return fmt.Sprintf("a link-local address out of DAD (%v %v)", as, err)
	}
	for end := time.Now().Add(labReadyWithin); ; time.Sleep(20 * time.Millisecond) {
		m := missing()
		if m == "" {
			return
		}
		if time.Now().After(end) {
			l.t.Fatalf("IPv6 on %s not ready within %s: no %s", name, labReadyWithin, m)
		}
	}
}

// hairpin sets hairpin mode on the container's bridge port (the caller's job).
func (l *lab) hairpin(c *container) {
	l.t.Helper()
	hv, err := l.hostNL.LinkByName(c.hostVeth)
	must(l.t, "find host veth", err)
	must(l.t, "hairpin", l.hostNL.LinkSetHairpin(hv, true))
}

func (c *container) attachment(ports ...PortMapping) Attachment {
	return Attachment{Network: c.net.Name, ContainerID: "ctr-" + c.name, IfName: ctrLink,
		IPs: []net.IP{c.ip4, c.ip6}, Ports: ports}
}

func (l *lab) publish(c *container, ports ...PortMapping) Attachment {
	l.t.Helper()
	a := c.attachment(ports...)
	must(l.t, "AddAttachment "+c.name, l.fw.AddAttachment(c.net.Network, a))
	return a
}

// eachBackend runs the scenario against both backends, each in its own lab.
func eachBackend(t *testing.T, scenario func(t *testing.T, l *lab)) {
	requireRoot(t)
	for _, kind := range labBackends {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			scenario(t, newLab(t, kind))
		})
	}
}

// eachVariant runs the scenario once per variant and backend, each in its own lab, the
// variants in parallel.
func eachVariant(t *testing.T, variants []string, scenario func(t *testing.T, l *lab, variant string)) {
	for _, v := range variants {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			eachBackend(t, func(t *testing.T, l *lab) { scenario(t, l, v) })
		})
	}
}

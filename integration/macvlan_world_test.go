package integration

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/plugintest"
)

// The macvlan test world: a host netns whose master "mvpar0" is a veth (this kernel has no
// dummy links) to a "lan" netns that plays the physical network. The LAN's router holds
// mvLanIP, the host mvHostIP on the master, and the host's default route goes via the
// LAN, so an unset master resolves to mvpar0.
const (
	mvParent  = "mvpar0"
	mvWire    = "mvwire0"
	mvSubnet  = "10.230.0.0/24"
	mvLanIP   = "10.230.0.1"
	mvHostIP  = "10.230.0.254"
	mvPrefix  = "/24"
	mvMTU     = 1500
	shimProto = 0x6d // the host shim's route protocol (link/shim)
)

type mvWorld struct {
	*world
	lan     ns.NetNS
	lockDir string
}

func newMvWorld(t *testing.T) *mvWorld {
	t.Helper()
	host := plugintest.Netns(t, "moorit-mvh")
	w := &mvWorld{
		world:   &world{t: t, host: host, dataDir: t.TempDir()},
		lan:     plugintest.Netns(t, "moorit-mvl"),
		lockDir: t.TempDir(),
	}
	w.rt = newRuntime(t, host)
	w.rt.cni.Path = append(w.rt.cni.Path, refPluginDir)
	w.addParent(mvParent, mvWire, mvHostIP+mvPrefix, mvLanIP+mvPrefix, true)
	err := host.Do(func(ns.NetNS) error {
		par, err := netlinksafe.LinkByName(mvParent)
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: par.Attrs().Index, Gw: net.ParseIP(mvLanIP)})
	})
	if err != nil {
		t.Fatalf("default route: %v", err)
	}
	return w
}

// addParent adds a veth "name" to the host with its peer in the LAN, with optional
// addresses on each end; up sets the host end up (the LAN end is always up).
func (w *mvWorld) addParent(name, peer, hostAddr, lanAddr string, up bool) {
	w.t.Helper()
	setup := func(netns ns.NetNS, link, addr string, up bool) error {
		return netns.Do(func(ns.NetNS) error {
			l, err := netlinksafe.LinkByName(link)
			if err != nil {
				return err
			}
			if addr != "" {
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: cidr(addr)}); err != nil {
					return err
				}
			}
			lo, _ := netlinksafe.LinkByName("lo")
			_ = netlink.LinkSetUp(lo)
			if up {
				return netlink.LinkSetUp(l)
			}
			return nil
		})
	}
	err := w.host.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(int(w.lan.Fd()))})
	})
	if err == nil {
		err = setup(w.host, name, hostAddr, up)
	}
	if err == nil {
		err = setup(w.lan, peer, lanAddr, true)
	}
	if err != nil {
		w.t.Fatalf("parent %s: %v", name, err)
	}
}

// addParentIn adds an up veth "name" inside netns (its peer, name+"p", too): a master
// for linkInContainer, or an interface that is in the way.
func (w *mvWorld) addParentIn(netns ns.NetNS, name string) {
	w.t.Helper()
	err := netns.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return err
		}
		for _, n := range []string{name, name + "p"} {
			l, err := netlinksafe.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.t.Fatalf("veth %s in %s: %v", name, netns.Path(), err)
	}
}

// mvConf is a moor-macvlan plugin entry on mvpar0 with moor-ipam handing out
// 10.230.0.<first>-<first+39>; extra overrides (a nil value deletes the key).
func (w *mvWorld) mvConf(first int, extra map[string]any) map[string]any {
	conf := map[string]any{
		"type":    "moor-macvlan",
		"master":  mvParent,
		"mode":    "bridge",
		"lockDir": w.lockDir,
		"ipam": map[string]any{
			"type":       "moor-ipam",
			"subnet":     mvSubnet,
			"rangeStart": fmt.Sprintf("10.230.0.%d", first),
			"rangeEnd":   fmt.Sprintf("10.230.0.%d", first+39),
			"gateway":    mvLanIP,
			"routes":     []map[string]any{{"dst": "0.0.0.0/0"}},
			"dataDir":    w.dataDir,
		},
	}
	for k, v := range extra {
		if v == nil {
			delete(conf, k)
		} else {
			conf[k] = v
		}
	}
	return conf
}

func (w *mvWorld) mvNetwork(name string, first int, extra map[string]any) *libcni.NetworkConfigList {
	return conflist(w.t, "1.1.0", name, w.mvConf(first, extra))
}

// mvAttach makes a container netns and attaches it; it fails the test on error.
func (w *mvWorld) mvAttach(list *libcni.NetworkConfigList) (ns.NetNS, *libcni.RuntimeConf, *current.Result) {
	w.t.Helper()
	ctr := plugintest.Netns(w.t, "moorit-mvc")
	rt := attachment(ctr, "eth0")
	res, err := w.rt.add(list, rt)
	if err != nil {
		w.t.Fatalf("ADD: %v", err)
	}
	return ctr, rt, res
}

// linkIn returns the link name in netns, or nil when it does not exist.
func linkIn(t *testing.T, netns ns.NetNS, name string) netlink.Link {
	t.Helper()
	var link netlink.Link
	err := netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(name)
		if err == nil {
			link = l
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// macvlanIn returns the macvlan name in netns, failing the test when it is missing or
// not a macvlan.
func macvlanIn(t *testing.T, netns ns.NetNS, name string) *netlink.Macvlan {
	t.Helper()
	l := linkIn(t, netns, name)
	mv, ok := l.(*netlink.Macvlan)
	if !ok {
		t.Fatalf("%s in %s is %T, want a macvlan", name, netns.Path(), l)
	}
	return mv
}

// hostRoutes lists the host's routes of every table and family as text, sorted.
func (w *mvWorld) hostRoutes() []string {
	var out []string
	err := w.host.Do(func(ns.NetNS) error {
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
		for _, r := range routes {
			// The kernel adds a link's IPv6 link-local address (and its local route)
			// whenever autoconfiguration gets to it: not the plugin's doing.
			if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() && r.Table == unix.RT_TABLE_LOCAL {
				continue
			}
			out = append(out, r.String())
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// shimRoutes counts the host routes moor-macvlan keeps via shims (its route protocol).
func (w *mvWorld) shimRoutes() int {
	n := 0
	err := w.host.Do(func(ns.NetNS) error {
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: shimProto}, netlink.RT_FILTER_PROTOCOL)
		n = len(routes)
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return n
}

// shims lists the host's moor shims (links named mvs-*) with their first IPv4 address.
func (w *mvWorld) shims() map[string]string {
	out := map[string]string{}
	var names []string
	err := w.host.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "mvs-") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	for _, name := range names {
		out[name] = ""
		if addrs := w.hostAddrs(name, netlink.FAMILY_V4); len(addrs) > 0 {
			out[name] = addrs[0]
		}
	}
	return out
}

// hostAddrs lists the global addresses of the host's link name in family.
func (w *mvWorld) hostAddrs(name string, family int) []string {
	var out []string
	err := w.host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		addrs, err := netlinksafe.AddrList(l, family)
		for _, a := range addrs {
			if a.IP.IsGlobalUnicast() {
				out = append(out, a.IP.String())
			}
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// onlyShim returns the address of the one shim of the host, failing otherwise.
func (w *mvWorld) onlyShim() string {
	w.t.Helper()
	s := w.shims()
	if len(s) != 1 {
		w.t.Fatalf("host shims %v, want exactly one", s)
	}
	for _, ip := range s {
		return ip
	}
	return ""
}

// parentIndex is the host index of link name.
func (w *mvWorld) parentIndex(name string) int {
	w.t.Helper()
	l := linkIn(w.t, w.host, name)
	if l == nil {
		w.t.Fatalf("no %s in the host", name)
	}
	return l.Attrs().Index
}

// snapshot is the host's links and routes at one moment.
type snapshot struct{ links, routes []string }

func (w *mvWorld) snapshot() snapshot { return snapshot{w.hostLinks(), w.hostRoutes()} }

// wantBack fails the test unless the host's links and routes are those of snap and
// network holds no address (the shim's included).
func (w *mvWorld) wantBack(t *testing.T, snap snapshot, network string) {
	t.Helper()
	now := w.snapshot()
	for _, c := range []struct {
		what          string
		before, after []string
	}{{"host links", snap.links, now.links}, {"host routes", snap.routes, now.routes}} {
		if strings.Join(c.before, "\n") != strings.Join(c.after, "\n") {
			t.Errorf("%s changed:\n%s\n---\n%s", c.what, strings.Join(c.before, "\n"), strings.Join(c.after, "\n"))
		}
	}
	if r := w.reservations(network); len(r) != 0 {
		t.Errorf("addresses left in %s: %v", network, r)
	}
}

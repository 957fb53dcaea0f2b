package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// Addresses of the test world. The "outside" netns plays the internet: it knows no route
// to any container subnet, so a container reaching it proves masquerade.
const (
	hostUplinkIP = "10.250.0.1"
	outsideIP    = "10.250.0.2"
	refPluginDir = "/usr/lib/cni" // Debian's containernetworking-plugins
)

// world is one host with an uplink to an outside network, a CNI runtime on the host,
// and a firewall backend under test.
type world struct {
	t       *testing.T
	host    ns.NetNS
	outside ns.NetNS
	rt      *runtime
	dataDir string
	backend string
}

func newWorld(t *testing.T, backend string) *world {
	t.Helper()
	w := &world{t: t, backend: backend, dataDir: t.TempDir()}
	w.host = plugintest.Netns(t, "moorit-brh")
	w.outside = plugintest.Netns(t, "moorit-bro")
	w.rt = newRuntime(t, w.host)
	w.rt.cni.Path = append(w.rt.cni.Path, refPluginDir)
	err := w.host.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mbup0"}, PeerName: "mbout0", PeerNamespace: netlink.NsFd(int(w.outside.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		up, err := netlinksafe.LinkByName("mbup0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(up, &netlink.Addr{IPNet: cidr(hostUplinkIP + "/24")}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(up); err != nil {
			return err
		}
		lo, _ := netlinksafe.LinkByName("lo")
		_ = netlink.LinkSetUp(lo)
		return netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(outsideIP)})
	})
	if err != nil {
		t.Fatalf("host side: %v", err)
	}
	err = w.outside.Do(func(ns.NetNS) error {
		out, err := netlinksafe.LinkByName("mbout0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(out, &netlink.Addr{IPNet: cidr(outsideIP + "/24")}); err != nil {
			return err
		}
		lo, _ := netlinksafe.LinkByName("lo")
		_ = netlink.LinkSetUp(lo)
		return netlink.LinkSetUp(out)
	})
	if err != nil {
		t.Fatalf("outside: %v", err)
	}
	return w
}

// bridgeConf is a moor-bridge plugin entry with moor-ipam on subnet; extra overrides.
func (w *world) bridgeConf(bridge, subnet string, extra map[string]any) map[string]any {
	conf := map[string]any{
		"type":             "moor-bridge",
		"bridge":           bridge,
		"isGateway":        true,
		"isDefaultGateway": true,
		"ipMasq":           true,
		"firewallBackend":  w.backend,
		"capabilities":     map[string]any{"portMappings": true},
		"ipam":             map[string]any{"type": "moor-ipam", "subnet": subnet, "dataDir": w.dataDir},
	}
	for k, v := range extra {
		conf[k] = v
	}
	return conf
}

func (w *world) network(name, bridge, subnet string, extra map[string]any) *libcni.NetworkConfigList {
	return conflist(w.t, "1.1.0", name, w.bridgeConf(bridge, subnet, extra))
}

// container makes a container netns and attaches it; ports are its published ports.
func (w *world) attach(list *libcni.NetworkConfigList, ports ...map[string]any) (ns.NetNS, *libcni.RuntimeConf, *current.Result) {
	w.t.Helper()
	ctr := plugintest.Netns(w.t, "moorit-brc")
	rt := attachment(ctr, "eth0")
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	res, err := w.rt.add(list, rt)
	if err != nil {
		w.t.Fatalf("ADD: %v", err)
	}
	return ctr, rt, res
}

// ip returns the container's first IPv4 address from its result.
func ipOf(res *current.Result) string {
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			return ipc.Address.IP.String()
		}
	}
	return ""
}

// hostLinks lists the names of the host's links, sorted.
func (w *world) hostLinks() []string {
	var names []string
	err := w.host.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// bridgePorts counts the ports of a bridge in the host (-1: no such bridge).
func (w *world) bridgePorts(bridge string) int {
	n := -1
	_ = w.host.Do(func(ns.NetNS) error {
		br, err := netlinksafe.LinkByName(bridge)
		if err != nil {
			return nil
		}
		n = 0
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				n++
			}
		}
		return err
	})
	return n
}

// reservations lists the attachment keys that hold addresses in the network's store.
func (w *world) reservations(network string) []string {
	path := filepath.Join(w.dataDir, network+".db")
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	st, err := local.Open(local.Options{Path: path})
	if err != nil {
		w.t.Fatal(err)
	}
	defer st.Close()
	atts, err := st.List(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	var keys []string
	for _, a := range atts {
		keys = append(keys, a.Key.String())
	}
	return keys
}

// fwAttachments lists the attachments with firewall rules in the network.
func (w *world) fwAttachments(network string) []string {
	fw, err := firewall.New(w.backend, firewall.Options{NetNS: w.host})
	if err != nil {
		w.t.Fatal(err)
	}
	keys, err := fw.Attachments(network)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, k.String())
	}
	return out
}

// ruleset dumps the host's firewall rules as text (nft or iptables-save).
func (w *world) ruleset() string {
	var out []byte
	_ = w.host.Do(func(ns.NetNS) error {
		var err error
		if w.backend == firewall.KindIPTables {
			out, err = execOut("iptables-save")
		} else {
			out, err = execOut("nft", "list", "ruleset")
		}
		return err
	})
	// iptables-save stamps its output with the time: keep only the rules.
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

var backends = []string{firewall.KindNFTables, firewall.KindIPTables}

// forEachBackend runs fn as a subtest per firewall backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, w *world)) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) { fn(t, newWorld(t, b)) })
	}
}

// plugintestNetns makes a container netns owned by the test.
func plugintestNetns(t *testing.T) ns.NetNS { return plugintest.Netns(t, "moorit-brc") }

// plugintestNamed makes a netns the test deletes itself (to test DEL after it is gone).
func plugintestNamed(prefix string) (ns.NetNS, error) {
	return plugintest.NewNamedNetns(prefix + "-" + plugintest.RandomSuffix())
}

func deleteNetns(n ns.NetNS) { _ = plugintest.DeleteNetns(n) }

// nftTable lists one nftables table of the host ("" when it does not exist).
func (w *world) nftTable(family, name string) string {
	var out []byte
	_ = w.host.Do(func(ns.NetNS) error {
		out, _ = execOut("nft", "list", "table", family, name)
		return nil
	})
	return string(out)
}

package runtimes

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// Names and addresses the tests own: bridges and networks "mrt<8 hex>", subnets
// 10.230.<n>.0/24 that no host route or address overlaps.
const (
	bridgePrefix  = "mrt"
	subnetFirst   = "10.230."
	subnetMax     = 256
	subnetTries   = 64
	dnsDomain     = "dns.moor" // moor-dns's default search domain
	libcniResults = "/var/lib/cni/results"
	sidecarStop   = 5 * time.Second
	pollInterval  = 50 * time.Millisecond
	// conflistVersion is the newest spec podman 4.3 and containerd 1.6 (libcni 1.1)
	// know; conflistVersions lets newer runtimes (cnitool 1.3) pick 1.1.0, for GC and
	// STATUS.
	conflistVersion = "1.0.0"
)

var conflistVersions = []string{"1.0.0", "1.1.0"}

// moorNet is one moor bridge network with DNS, whose state (IPAM store, DNS records,
// sidecar socket and pid file, plugin logs) lives in the test's own directory.
type moorNet struct {
	t       *testing.T
	Name    string
	Bridge  string
	Subnet  *net.IPNet
	Gateway net.IP
	state   string
}

// newMoorNet picks a free name and subnet and removes, when the test ends, whatever the
// network still holds on the host: its sidecar, its firewall rules and its bridge.
func newMoorNet(t *testing.T) *moorNet {
	t.Helper()
	name, subnet, gw := freeNetwork(t)
	n := &moorNet{t: t, Name: name, Bridge: name, Subnet: subnet, Gateway: gw, state: t.TempDir()}
	t.Cleanup(func() {
		if err := n.teardown(); err != nil {
			t.Errorf("removing network %s: %v", name, err)
		}
	})
	return n
}

// freeNetwork picks a network (and bridge) name "mrt<hex>", a free subnet (freeSubnet)
// and its gateway, the subnet's first address.
func freeNetwork(t *testing.T) (name string, subnet *net.IPNet, gateway net.IP) {
	t.Helper()
	subnet, err := freeSubnet()
	if err != nil {
		t.Fatal(err)
	}
	gateway = make(net.IP, net.IPv4len)
	copy(gateway, subnet.IP.To4())
	gateway[3] = 1
	return bridgePrefix + plugintest.RandomSuffix(), subnet, gateway
}

// handedOut holds the subnets freeSubnet has returned in this test process: a network is
// on the host only once its first container runs, so two networks made one after the
// other (the podman 5 setup-time test makes two before either has a container) must not
// draw the same /24 (podman refuses the second: "already used by another config").
var handedOut sync.Map

// freeSubnet returns a 10.230.<n>.0/24 that no address or route of the host overlaps and
// that it has not returned before in this process.
func freeSubnet() (*net.IPNet, error) {
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var b [1]byte
	for i := 0; i < subnetTries; i++ {
		_, _ = rand.Read(b[:])
		_, sn, _ := net.ParseCIDR(fmt.Sprintf("%s%d.0/24", subnetFirst, int(b[0])%subnetMax))
		used := false
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones > 0 && (r.Dst.Contains(sn.IP) || sn.Contains(r.Dst.IP)) {
				used = true // a default route overlaps everything, and matters not
			}
		}
		for _, a := range addrs {
			if sn.Contains(a.IP) {
				used = true
			}
		}
		if !used {
			if _, taken := handedOut.LoadOrStore(sn.String(), true); !taken {
				return sn, nil
			}
		}
	}
	return nil, fmt.Errorf("no free /24 in %s0.0/16 after %d tries", subnetFirst, subnetTries)
}

// conflist is the network's config as a user writes it (see docs/runtimes.md), with
// every state path in the test's directory.
func (n *moorNet) conflist() []byte {
	list := map[string]any{
		"cniVersion":  conflistVersion,
		"cniVersions": conflistVersions,
		"name":        n.Name,
		"plugins": []any{
			map[string]any{
				"type":             "moor-bridge",
				"bridge":           n.Bridge,
				"isGateway":        true,
				"isDefaultGateway": true,
				"ipMasq":           true,
				"capabilities":     map[string]bool{"portMappings": true},
				"logFile":          filepath.Join(n.state, "moor.log"),
				"ipam": map[string]any{
					"type":    "moor-ipam",
					"subnet":  n.Subnet.String(),
					"dataDir": n.ipamDir(),
				},
			},
			map[string]any{
				"type":          "moor-dns",
				"capabilities":  map[string]bool{"aliases": true},
				"storeDir":      n.dnsDir(),
				"controlSocket": filepath.Join(n.state, "dns.sock"),
				"pidFile":       n.pidFile(),
				"logFile":       filepath.Join(n.state, "moor.log"),
			},
		},
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		n.t.Fatal(err)
	}
	return data
}

func (n *moorNet) ipamDir() string { return filepath.Join(n.state, "ipam") }
func (n *moorNet) dnsDir() string  { return filepath.Join(n.state, "dns") }
func (n *moorNet) pidFile() string { return filepath.Join(n.state, "dns.pid") }

// write puts the conflist into dir as file.
func (n *moorNet) write(dir, file string) string {
	n.t.Helper()
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, n.conflist(), fileMode); err != nil {
		n.t.Fatal(err)
	}
	return path
}

// inSubnet fails the test unless ip is a container address of the network.
func (n *moorNet) inSubnet(what, ip string) {
	n.t.Helper()
	p := net.ParseIP(ip)
	if p == nil || !n.Subnet.Contains(p) || p.Equal(n.Gateway) {
		n.t.Fatalf("%s: address %q, want one in %s", what, ip, n.Subnet)
	}
}

// attachments describes what the network holds for containers on the host: bridge
// ports, IPAM reservations, DNS records, firewall attachment rules and libcni cache
// entries. Empty when every container is gone.
func (n *moorNet) attachments() []string {
	var out []string
	if br, err := netlinksafe.LinkByName(n.Bridge); err == nil {
		links, _ := netlinksafe.LinkList()
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				out = append(out, "bridge port "+l.Attrs().Name)
			}
		}
	}
	if db := filepath.Join(n.ipamDir(), n.Name+".db"); fileExists(db) {
		st, err := local.Open(local.Options{Path: db})
		if err != nil {
			return append(out, fmt.Sprintf("ipam store: %v", err))
		}
		atts, err := st.List(context.Background())
		st.Close()
		if err != nil {
			out = append(out, fmt.Sprintf("ipam store: %v", err))
		}
		for _, a := range atts {
			out = append(out, "ipam reservation "+a.Key.String())
		}
	}
	if fileExists(n.dnsDir()) {
		st, err := records.NewLocal(n.dnsDir())
		if err != nil {
			return append(out, fmt.Sprintf("dns store: %v", err))
		}
		recs, err := st.List(context.Background(), n.Name)
		st.Close()
		if err != nil {
			out = append(out, fmt.Sprintf("dns store: %v", err))
		}
		for _, r := range recs {
			out = append(out, fmt.Sprintf("dns record %s %v", r.ContainerID, r.Names))
		}
	}
	if fw, err := firewall.New(firewall.KindDetect, firewall.Options{}); err == nil {
		keys, err := fw.Attachments(n.Name)
		if err != nil {
			out = append(out, fmt.Sprintf("firewall: %v", err))
		}
		for _, k := range keys {
			out = append(out, "firewall rules of "+k.String())
		}
	}
	entries, _ := os.ReadDir(libcniResults)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), n.Name+"-") {
			out = append(out, "libcni cache "+e.Name())
		}
	}
	return out
}

// noAttachments fails the test if the network still holds anything for a container.
func (n *moorNet) noAttachments(after string) {
	n.t.Helper()
	if left := n.attachments(); len(left) > 0 {
		n.t.Errorf("after %s, network %s still holds:\n%s", after, n.Name, strings.Join(left, "\n"))
	}
}

// teardown stops the network's DNS sidecar (by the PID in its pid file, which this
// test's ADDs started), removes the network's firewall rules (and moor's table or chains
// when it was the last network) and its bridge.
func (n *moorNet) teardown() error {
	var errs []string
	if err := stopSidecar(n.pidFile()); err != nil {
		errs = append(errs, err.Error())
	}
	fw, err := firewall.New(firewall.KindDetect, firewall.Options{})
	if err == nil {
		err = fw.RemoveNetwork(n.Name)
	}
	if err != nil {
		errs = append(errs, fmt.Sprintf("firewall: %v", err))
	}
	if br, err := netlinksafe.LinkByName(n.Bridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Sprintf("deleting bridge %s: %v", n.Bridge, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// stopSidecar ends the moor-dns sidecar that holds pidFile: SIGTERM, then SIGKILL.
func stopSidecar(pidFile string) error {
	pid, ok := server.Running(pidFile)
	if !ok {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stopping DNS sidecar %d: %w", pid, err)
	}
	deadline := time.Now().Add(sidecarStop)
	for time.Now().Before(deadline) {
		if _, ok := server.Running(pidFile); !ok {
			return nil
		}
		time.Sleep(pollInterval)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("DNS sidecar %d ignored SIGTERM for %s; killed", pid, sidecarStop)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

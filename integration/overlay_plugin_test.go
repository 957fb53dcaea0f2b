package integration

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

const labPlugin = `
underlay: 172.31.10.0/24
networks:
  - {name: ov, subnet: 10.243.0.0/16, vni: 42}
hosts:
  - {name: h1}
  - {name: h2, containers: [c2]}
`

// hostRuntime is a libcni runtime whose plugins run in a lab host's namespace.
func hostRuntime(t *testing.T, h *lab.Host) *runtime {
	t.Helper()
	hostNS, err := ns.GetNS(h.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hostNS.Close() })
	return newRuntime(t, hostNS)
}

// TestOverlayPluginVerbs drives moor-overlay through libcni on a host without an agent:
// fault points on a pristine host leave nothing (no lease, no link, no reservation); ADD
// claims the lease and syncs the other host; CHECK finds drift; GC, DEL (twice, and after
// the netns is gone) and STATUS (with etcd up and down).
func TestOverlayPluginVerbs(t *testing.T) {
	l := upLab(t, labPlugin)
	h1, _ := l.Host("h1")
	if err := l.LeaveHost(t.Context(), "h1"); err != nil { // releases the lease and stops the agent
		t.Fatal(err)
	}
	if err := execIn(h1.Netns, "ip", "link", "del", ovBridge); err != nil {
		t.Fatal(err)
	}
	pristine := links(t, h1.Netns)
	rt := hostRuntime(t, h1)
	list, err := libcni.ConfListFromFile(mustConflist(t, l, "h1"))
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(h1.Dir, "ipam", ovNetwork+".db")

	for _, point := range []string{"overlay/after-lease", "overlay/after-device", "overlay/after-ipam", "overlay/after-veth", "overlay/after-shaping"} {
		t.Run("fault "+point, func(t *testing.T) {
			ctr := plugintest.Netns(t, "moorit-ovc")
			t.Setenv(plugins.FaultEnv, point)
			_, err := rt.add(list, attachment(ctr, "eth0"))
			t.Setenv(plugins.FaultEnv, "")
			if err == nil || !strings.Contains(err.Error(), point) {
				t.Fatalf("ADD with fault %s: %v", point, err)
			}
			if _, held := leaseOf(leases(t, l), h1.HostID); held {
				t.Error("the lease the failed ADD claimed was not released")
			}
			if got := links(t, h1.Netns); !slices.Equal(got, pristine) {
				t.Errorf("host links %v, before %v", got, pristine)
			}
			if got := links(t, ctr.Path()); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("container links %v", got)
			}
			if held := reservations(t, store); len(held) != 0 {
				t.Errorf("reservations %v", held)
			}
		})
	}

	c1 := plugintest.Netns(t, "moorit-ovc")
	rt1 := attachment(c1, "eth0")
	res, err := rt.add(list, rt1)
	if err != nil {
		t.Fatal(err)
	}
	own, held := leaseOf(leases(t, l), h1.HostID)
	ip := netip.MustParseAddr(ipOf(res))
	if !held || !own.Subnet.Contains(ip) || res.IPs[0].Gateway.String() != own.Gateway().String() {
		t.Fatalf("ADD result %+v, lease %+v held %v", res.IPs, own, held)
	}
	if len(res.Interfaces) != 3 || res.Interfaces[2].Sandbox != c1.Path() || res.Interfaces[2].Mtu != 1450 || len(res.Routes) != 2 {
		t.Fatalf("ADD result interfaces %+v routes %+v", res.Interfaces, res.Routes)
	}
	waitConverged(t, l, "h1", "h2") // h1 by the ADD's one-shot sync, h2 by its agent
	c2, _ := l.Container("c2")
	if err := pingFrom(c1, c2.Attachments[0].IP); err != nil {
		t.Fatal(err)
	}
	if err := rt.check(list, rt1); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := rt.status(list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}

	// Drift: h2's neighbour entry vanishes on h1; CHECK names it; the next ADD's sync repairs it.
	h2lease, _ := leaseOf(leases(t, l), l.Name+"-h2")
	if err := execIn(h1.Netns, "ip", "neigh", "del", h2lease.Gateway().String(), "dev", ovVXLAN); err != nil {
		t.Fatal(err)
	}
	err = rt.check(list, rt1)
	if cniCode(err) != codes.CheckFailed || !strings.Contains(err.Error(), "neighbour "+h2lease.Gateway().String()) {
		t.Fatalf("CHECK after drift: %v, want code %d naming the neighbour", err, codes.CheckFailed)
	}
	c3 := plugintest.Netns(t, "moorit-ovc")
	rt3 := attachment(c3, "eth0")
	if _, err := rt.add(list, rt3); err != nil {
		t.Fatal(err)
	}
	if err := rt.check(list, rt1); err != nil {
		t.Fatalf("CHECK after the repairing ADD: %v", err)
	}

	// GC keeps c1 only.
	if err := rt.gc(list, rt1); err != nil {
		t.Fatal(err)
	}
	if held := reservations(t, store); !slices.Equal(held, []string{rt1.ContainerID + "/eth0"}) {
		t.Fatalf("reservations after GC: %v", held)
	}
	if got := links(t, c3.Path()); !slices.Equal(got, []string{"lo"}) {
		t.Fatalf("GC left c3's interface: %v", got)
	}

	// DEL twice; DEL after the netns is gone.
	for range 2 {
		if err := rt.del(list, rt1); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := plugintestNamed("moorit-ovc")
	if err != nil {
		t.Fatal(err)
	}
	rtGone := attachment(gone, "eth0")
	if _, err := rt.add(list, rtGone); err != nil {
		deleteNetns(gone)
		t.Fatal(err)
	}
	deleteNetns(gone)
	if err := rt.del(list, rtGone); err != nil {
		t.Fatalf("DEL after the netns is gone: %v", err)
	}
	if held := reservations(t, store); len(held) != 0 {
		t.Fatalf("reservations after DEL: %v", held)
	}
	if n := bridgePortsIn(t, h1.Netns); n != 0 {
		t.Fatalf("%d veths left on the bridge", n)
	}

	l.StopEtcd()
	if err := rt.status(list); cniCode(err) != codes.PluginNotAvailable {
		t.Fatalf("STATUS with etcd down: %v, want code %d", err, codes.PluginNotAvailable)
	}
}

func mustConflist(t *testing.T, l *lab.Lab, host string) string {
	t.Helper()
	p, err := l.ConflistPath(host, ovNetwork)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pingFrom(n ns.NetNS, ip string) error { return ping(n, ip) }

// bridgePortsIn counts the ports of the overlay bridge of a host.
func bridgePortsIn(t *testing.T, netns string) int {
	t.Helper()
	rows, err := ipJSON(netns, "link", "show", "master", ovBridge)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}

// TestOverlayBadConfigs: every wrong field is refused with the right code, naming the
// field, before anything is touched.
func TestOverlayBadConfigs(t *testing.T) {
	host := plugintest.Netns(t, "moorit-ovh")
	rt := newRuntime(t, host)
	base := map[string]any{"type": "moor-overlay", "subnet": "10.244.0.0/16", "hostID": "h", "store": map[string]any{"endpoints": []string{"http://127.0.0.1:1"}}}
	cases := []struct {
		change   map[string]any
		code     uint
		mentions string
	}{
		{map[string]any{"subnet": "10.244.0.1/16"}, codes.InvalidNetworkConfig, "subnet"},
		{map[string]any{"subnet": "fd00::/64"}, codes.InvalidNetworkConfig, "subnet"},
		{map[string]any{"hostSubnetLen": 16}, codes.InvalidNetworkConfig, "hostSubnetLen"},
		{map[string]any{"vni": 1 << 24}, codes.InvalidNetworkConfig, "vni"},
		{map[string]any{"port": 0}, codes.InvalidNetworkConfig, "port"},
		{map[string]any{"mtu": 20}, codes.InvalidNetworkConfig, "mtu"},
		{map[string]any{"store": map[string]any{}}, codes.InvalidNetworkConfig, "store.endpoints"},
		{map[string]any{"leaseTTL": "1s"}, codes.InvalidNetworkConfig, "leaseTTL"},
		{map[string]any{"hostID": "a/b"}, codes.InvalidNetworkConfig, "hostID"},
		{map[string]any{"ipam": map[string]any{"type": "host-local"}}, codes.UnsupportedField, "ipam.type"},
		{map[string]any{"ipam": map[string]any{"ranges": []any{}}}, codes.UnsupportedField, "ipam.ranges"},
		{map[string]any{"vni": "42"}, codes.InvalidNetworkConfig, "vni"},
	}
	for _, tc := range cases {
		conf := map[string]any{}
		for k, v := range base {
			conf[k] = v
		}
		for k, v := range tc.change {
			conf[k] = v
		}
		desc, _ := json.Marshal(tc.change)
		t.Run(string(desc), func(t *testing.T) {
			ctr := plugintest.Netns(t, "moorit-ovc")
			_, err := rt.add(conflist(t, "1.1.0", "badov", conf), attachment(ctr, "eth0"))
			wantCode(t, err, tc.code, tc.mentions)
		})
	}
}

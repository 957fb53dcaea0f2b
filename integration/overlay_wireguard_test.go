package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
	"github.com/moornet/moor/plugins/plugintest"
)

// TestOverlayWireGuardRefusedWithoutModule: on a kernel without WireGuard, an ADD on an
// encrypted network answers code 104 naming the module and leaves nothing: no link, no
// private key, no state directory, no IPAM file. The store's endpoint answers nobody, so
// code 104 (not 11) also proves the kernel is asked before any lease is claimed.
func TestOverlayWireGuardRefusedWithoutModule(t *testing.T) {
	plugintest.RequireKernelWithout(t, plugintest.KernelWireGuard)
	host := plugintest.Netns(t, "moorit-wgh")
	if err := execIn(filepath.Base(host.Path()), "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"}, {"ip", "link", "set", "eth0", "up"}} {
		if err := execIn(filepath.Base(host.Path()), cmd...); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(t.TempDir(), "state")
	ipamDir := filepath.Join(t.TempDir(), "ipam")
	conf := map[string]any{"type": "moor-overlay", "subnet": "10.245.0.0/16", "hostID": "h", "underlay": "eth0",
		"encryption": "wireguard", "stateDir": state, "agentSocket": filepath.Join(t.TempDir(), "agent.sock"),
		"store": map[string]any{"endpoints": []string{"http://127.0.0.1:1"}, "dialTimeout": "1s", "requestTimeout": "1s"},
		"ipam":  map[string]any{"type": "moor-ipam", "dataDir": ipamDir}}
	hostBefore := links(t, host.Path())
	rt := newRuntime(t, host)
	ctr := plugintest.Netns(t, "moorit-wgc")
	_, err := rt.add(conflist(t, "1.1.0", "wgov", conf), attachment(ctr, "eth0"))
	wantCode(t, err, codes.KernelFeature, "wireguard")
	if got := links(t, host.Path()); !slices.Equal(got, hostBefore) {
		t.Errorf("host links %v, before %v", got, hostBefore)
	}
	if got := links(t, ctr.Path()); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("container links %v", got)
	}
	for _, dir := range []string{state, ipamDir} {
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Errorf("%s exists after the refused ADD (%v)", dir, err)
		}
	}
}

// TestOverlayPlaneMismatchRefused: the store records the network's data plane; a host
// whose config asks for another one (here a clear VXLAN host on a network its first host
// made encrypted) is refused with code 7 naming the field and both planes, and leaves
// nothing: no lease, no link, no IPAM file. Runs on any kernel (the clear host needs no
// WireGuard), once per spec version.
func TestOverlayPlaneMismatchRefused(t *testing.T) {
	plugintest.RequireRoot(t)
	host := plugintest.Netns(t, "moorit-pmh")
	hostName := filepath.Base(host.Path())
	for _, cmd := range [][]string{
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"}, {"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "lo", "up"},
	} {
		if err := execIn(hostName, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	srv := etcdtest.Start(t, etcdtest.Options{NetNS: host})
	// the network's config as its first (encrypted) host stored it
	stored := `{"range":"10.244.0.0/16","hostSubnetLen":24,"vni":42,"port":4789,"plane":"wireguard"}`
	if err := execIn(hostName, "etcdctl", "--endpoints", srv.Endpoint, "put", ovStorePref+"/pm/config", stored); err != nil {
		t.Fatal(err)
	}
	for _, ver := range versionsFrom("1.0.0") {
		t.Run(ver, func(t *testing.T) {
			ipamDir := filepath.Join(t.TempDir(), "ipam")
			conf := map[string]any{"type": "moor-overlay", "subnet": "10.244.0.0/16", "vni": 42, "port": 4789, "hostID": "h-clear", "underlay": "eth0",
				"agentSocket": filepath.Join(t.TempDir(), "agent.sock"),
				"store":       map[string]any{"endpoints": []string{srv.Endpoint}, "dialTimeout": "5s", "requestTimeout": "5s"},
				"ipam":        map[string]any{"type": "moor-ipam", "dataDir": ipamDir}}
			before := links(t, host.Path())
			ctr := plugintest.Netns(t, "moorit-pmc")
			_, err := newRuntime(t, host).add(conflist(t, ver, "pm", conf), attachment(ctr, "eth0"))
			wantCode(t, err, codes.InvalidNetworkConfig, "plane is wireguard in the store but vxlan in this config")
			if !strings.Contains(err.Error(), `"encryption"`) {
				t.Errorf("%q does not name the config field that picks the plane", err)
			}
			if got := links(t, host.Path()); !slices.Equal(got, before) {
				t.Errorf("host links %v, before %v", got, before)
			}
			if got := links(t, ctr.Path()); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("container links %v", got)
			}
			if _, err := os.Lstat(ipamDir); !os.IsNotExist(err) {
				t.Errorf("%s exists after the refused ADD (%v)", ipamDir, err)
			}
			out, err := execOut("ip", "netns", "exec", hostName, "etcdctl", "--endpoints", srv.Endpoint, "get", "--prefix", "--keys-only", ovStorePref+"/pm/")
			if err != nil || strings.TrimSpace(string(out)) != ovStorePref+"/pm/config" {
				t.Errorf("store after the refused ADD: %q, %v; want the config key only", out, err)
			}
		})
	}
}

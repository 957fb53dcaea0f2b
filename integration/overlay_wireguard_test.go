package integration

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moornet/moor/plugins/codes"
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

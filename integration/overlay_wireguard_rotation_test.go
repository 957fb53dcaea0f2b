package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/overlay/wireguard"
	"github.com/moornet/moor/plugins/plugintest"
)

// rotationHosts is the size of the rotation lab in the test lane: enough hosts that a
// rotation has to reach many watchers at once, few enough that an emulated CPU starts them
// in about a minute (scripts/bench-overlay.sh VM=1 measures 20).
const rotationHosts = 8

// TestOverlayWireGuardRotationConverges: in an encrypted lab of rotationHosts hosts
// (agents only), two hosts in turn rotate their key with `moor-overlay agent
// --rotate-key`; every other host's device ends up with exactly one peer per other host,
// the rotated host's under its new key and none under the old one, and every other host's
// ping to the rotated host's gateway is answered through the tunnel. The deadline is
// generous (ovConverge); the time is logged, not asserted.
func TestOverlayWireGuardRotationConverges(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	var b strings.Builder
	b.WriteString("underlay: 172.31.13.0/24\nagent: {resync: 30s}\nnetworks:\n  - {name: ov, subnet: 10.247.0.0/16, vni: 42, encryption: wireguard}\nhosts:\n")
	for i := 1; i <= rotationHosts; i++ {
		fmt.Fprintf(&b, "  - {name: r%d}\n", i)
	}
	l := upWireGuardLabSpec(t, b.String())
	for _, name := range []string{"r1", "r5"} {
		h, _ := l.Host(name)
		own, held := leaseOf(leases(t, l), h.HostID)
		if !held {
			t.Fatalf("%s holds no lease", name)
		}
		old := hostKey(t, h)
		conf, _ := l.ConflistPath(name, ovNetwork)
		start := time.Now()
		out, err := exec.Command(filepath.Join(binDir, "moor-overlay"), "agent", "--rotate-key", "--listen", h.AgentEndpoint(), "--config", conf).CombinedOutput()
		if err != nil {
			t.Fatalf("--rotate-key on %s: %v: %s", name, err, out)
		}
		nk := hostKey(t, h)
		if nk == old {
			t.Fatalf("%s's key file did not change", name)
		}
		var others []*lab.Host
		for _, x := range l.Hosts {
			if x != h {
				others = append(others, x)
			}
		}
		if err := waitUntil(ovConverge, func() bool {
			for _, x := range others {
				keys := peerKeys(x.NetnsPath())
				if !keys[nk.Public()] || keys[old.Public()] || len(keys) != rotationHosts-1 {
					return false
				}
			}
			return true
		}); err != nil {
			for _, x := range others {
				t.Logf("%s: %d peers, new key %v, old key %v", x.Name, len(peerKeys(x.NetnsPath())), peerKeys(x.NetnsPath())[nk.Public()], peerKeys(x.NetnsPath())[old.Public()])
			}
			t.Fatalf("rotation of %s's key not applied by every host within %s", name, ovConverge)
		}
		keysIn := time.Since(start)
		gw := own.Gateway()
		if err := waitUntil(ovConverge, func() bool {
			for _, x := range others {
				if l.PingFromHost(x.Name, gw) != nil {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("after %s's rotation not every host reaches its gateway %s", name, gw)
		}
		t.Logf("rotation of %s (%d hosts): new key on every other host %s after running --rotate-key, pings answered from all after %s",
			name, rotationHosts, keysIn.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if k, _ := wireguard.LoadKey(filepath.Join(h.Dir, "state"), ovNetwork); k != nk {
			t.Fatalf("%s's key changed again", name)
		}
	}
}

package integration

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/plugintest"
)

// A conflist written for the reference bridge plugin works with only its type changed:
// here with the reference host-local as IPAM (exec'd from CNI_PATH) and most of the
// reference's fields set.
func TestBridgeReferenceConfigUnchanged(t *testing.T) {
	w := newWorld(t, "")
	conf := map[string]any{
		"type":                "moor-bridge",
		"bridge":              "mref0",
		"isGateway":           true,
		"isDefaultGateway":    true,
		"forceAddress":        false,
		"ipMasq":              true,
		"hairpinMode":         true,
		"mtu":                 1400,
		"promiscMode":         false,
		"enabledad":           false,
		"preserveDefaultVlan": true,
		"portIsolation":       false,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]any{{{"subnet": "10.214.0.0/24"}}},
			"routes":  []map[string]any{{"dst": "0.0.0.0/0"}},
			"dataDir": t.TempDir(),
		},
	}
	list := conflist(t, "1.0.0", "refnet", conf)
	ctr, rt, res := w.attach(list)
	if ipOf(res) == "" {
		t.Fatalf("no address from host-local: %+v", res)
	}
	if err := ping(ctr, "10.214.0.1"); err != nil {
		t.Error(err)
	}
	mtu := 0
	_ = ctr.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("eth0")
		if err == nil {
			mtu = l.Attrs().MTU
		}
		return err
	})
	if mtu != 1400 {
		t.Errorf("container MTU %d, want 1400", mtu)
	}
	if err := w.rt.check(list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if n := w.bridgePorts("mref0"); n != 0 {
		t.Errorf("%d ports left", n)
	}
}

func TestBridgeBadConfigs(t *testing.T) {
	w := newWorld(t, "")
	cases := []struct {
		name  string
		extra map[string]any
		code  uint
		names string
	}{
		{"mtu too small", map[string]any{"mtu": 10}, 7, "mtu 10"},
		{"mtu wrong type", map[string]any{"mtu": "big"}, 7, "mtu"},
		{"vlan out of range", map[string]any{"vlan": 5000}, 7, "vlan 5000"},
		{"bad trunk", map[string]any{"vlanTrunk": []map[string]any{{"minID": 10, "maxID": 5}}}, 7, "vlanTrunk[0]"},
		{"hairpin and promisc", map[string]any{"hairpinMode": true, "promiscMode": true}, 7, "promiscMode"},
		{"bad backend", map[string]any{"firewallBackend": "pf"}, 7, "firewallBackend"},
		{"backend contradiction", map[string]any{"firewallBackend": "nftables", "ipMasqBackend": "iptables"}, 7, "ipMasqBackend"},
		{"internal with default gateway", map[string]any{"internal": true, "isDefaultGateway": true}, 7, "isDefaultGateway"},
		{"bridge name too long", map[string]any{"bridge": "averyveryverylongname"}, 7, "bridge"},
		{"disabled interface with ipam", map[string]any{"disableContainerInterface": true}, 7, "disableContainerInterface"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := w.hostLinks()
			list := w.network("badnet", "mbad0", "10.215.0.0/24", tc.extra)
			ctr := plugintestNetns(t)
			_, err := w.rt.add(list, attachment(ctr, "eth0"))
			wantCode(t, err, tc.code, tc.names)
			if after := w.hostLinks(); len(after) != len(before) {
				t.Errorf("links changed: %v -> %v", before, after)
			}
		})
	}
}

// A kernel without bridge VLAN filtering: vlan configs fail with code 104 naming it, and
// leave nothing behind. (bridge_vlan_test.go has the kernels that have it.)
func TestBridgeVlanNeedsKernelSupport(t *testing.T) {
	plugintest.RequireKernelWithout(t, plugintest.KernelBridgeVlan)
	w := newWorld(t, "")
	list := w.network("vlannet", "mvlan0", "10.216.0.0/24", map[string]any{"vlan": 100})
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	_, err := w.rt.add(list, rt)
	wantCode(t, err, 104, "VLAN filtering")
	if n := w.bridgePorts("mvlan0"); n != -1 {
		t.Errorf("the failed ADD left bridge mvlan0 (%d ports)", n)
	}
}

// L2-only: disableContainerInterface leaves the container end down and IPAM empty.
func TestBridgeDisabledContainerInterface(t *testing.T) {
	w := newWorld(t, "")
	conf := w.bridgeConf("ml2br0", "", map[string]any{"disableContainerInterface": true, "isGateway": false, "isDefaultGateway": false, "ipMasq": false})
	delete(conf, "ipam")
	list := conflist(t, "1.1.0", "l2net", conf)
	ctr, rt, res := w.attach(list)
	if len(res.IPs) != 0 {
		t.Errorf("IPs %+v on an L2-only attachment", res.IPs)
	}
	_ = ctr.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			t.Errorf("eth0 missing: %v", err)
			return nil
		}
		if l.Attrs().Flags&net.FlagUp != 0 {
			t.Error("eth0 is up although disableContainerInterface is set")
		}
		return nil
	})
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// macspoofchk: frames with another source MAC than the container's are dropped; DEL
// removes the rule.
func TestBridgeMacSpoofCheck(t *testing.T) {
	w := newWorld(t, "")
	list := w.network("spoofnet", "mspoof0", "10.217.0.0/24", map[string]any{"macspoofchk": true})
	ctr, rt, _ := w.attach(list)
	if err := ping(ctr, "10.217.0.1"); err != nil {
		t.Fatalf("before spoofing: %v", err)
	}
	if err := w.rt.check(list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if rules := w.nftTable("bridge", "moor"); !strings.Contains(rules, rt.ContainerID) {
		t.Errorf("no macspoof rule for the container:\n%s", rules)
	}
	_ = ctr.Do(func(ns.NetNS) error {
		_, err := execOut("ip", "link", "set", "eth0", "address", "02:00:de:ad:be:ef")
		return err
	})
	if err := ping(ctr, "10.217.0.1"); err == nil {
		t.Error("a container with a spoofed MAC still reached the gateway")
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if rules := w.nftTable("bridge", "moor"); strings.Contains(rules, rt.ContainerID) {
		t.Errorf("macspoof rule left after DEL:\n%s", rules)
	}
}

package main

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

func load(t *testing.T, extra map[string]any, args string) (*conf, *types.Error) {
	t.Helper()
	call := &plugins.Call{Command: "ADD", ContainerID: "c1", IfName: "eth0", Args: args, StdinData: plugintest.Config("1.1.0", "net1", "moor-macvlan", extra)}
	c, err := loadConf(call)
	return c, plugins.ToCNIError(err)
}

func TestConfDefaultsAndFields(t *testing.T) {
	c, err := load(t, map[string]any{"master": "eth0.10", "mtu": 1400, "mac": "02:00:00:00:00:01", "bcqueuelen": 100}, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.mode != netlink.MACVLAN_MODE_BRIDGE || c.Mode != modeBridge {
		t.Errorf("default mode %q/%d, want bridge", c.Mode, c.mode)
	}
	if c.vlan == nil || c.vlan.Parent != "eth0" || c.vlan.ID != 10 {
		t.Errorf("vlan %+v, want eth0 id 10", c.vlan)
	}
	if c.MAC.String() != "02:00:00:00:00:01" || c.MTU != 1400 || c.BCQueueLen != 100 || c.LockDir != "/run/moor/macvlan" {
		t.Errorf("fields %+v", c)
	}
	c, err = load(t, map[string]any{"master": "eth0", "mac": "02:00:00:00:00:01"}, "IgnoreUnknown=1;MAC=02:00:00:00:00:02")
	if err != nil {
		t.Fatal(err)
	}
	if c.vlan != nil || c.MAC.String() != "02:00:00:00:00:02" {
		t.Errorf("vlan %+v MAC %s: CNI_ARGS MAC must win over the config's mac", c.vlan, c.MAC)
	}
}

// TestConfICC: icc false is mode private, with the mode unset or private; icc true
// changes nothing.
func TestConfICC(t *testing.T) {
	for _, tc := range []struct {
		extra map[string]any
		want  netlink.MacvlanMode
	}{
		{map[string]any{"icc": false}, netlink.MACVLAN_MODE_PRIVATE},
		{map[string]any{"icc": false, "mode": "private"}, netlink.MACVLAN_MODE_PRIVATE},
		{map[string]any{"icc": true}, netlink.MACVLAN_MODE_BRIDGE},
		{map[string]any{"icc": true, "mode": "vepa"}, netlink.MACVLAN_MODE_VEPA},
	} {
		c, err := load(t, tc.extra, "")
		if err != nil {
			t.Fatalf("%v: %v", tc.extra, err)
		}
		if c.mode != tc.want {
			t.Errorf("%v: mode %s, want %s", tc.extra, modeName(c.mode), modeName(tc.want))
		}
	}
}

func TestConfRefusals(t *testing.T) {
	cases := []struct {
		name     string
		extra    map[string]any
		args     string
		mentions string
	}{
		{"mode", map[string]any{"mode": "l3"}, "", `mode "l3"`},
		{"negative mtu", map[string]any{"mtu": -5}, "", "mtu -5"},
		{"mtu type", map[string]any{"mtu": "big"}, "", "mtu"},
		{"bad mac", map[string]any{"mac": "nope"}, "", `mac "nope"`},
		{"multicast mac", map[string]any{"mac": "03:00:00:00:00:01"}, "", "multicast"},
		{"multicast CNI_ARGS MAC", nil, "MAC=01:00:5e:00:00:01", "multicast"},
		{"master name", map[string]any{"master": "a/b"}, "", `master "a/b"`},
		{"vlan id 0", map[string]any{"master": "eth0.0"}, "", `master "eth0.0"`},
		{"vlan id 4095", map[string]any{"master": "eth0.4095"}, "", "between 1 and 4094"},
		{"shim without ipam", map[string]any{"hostShim": true}, "", "hostShim"},
		{"shim with dhcp", map[string]any{"hostShim": true, "ipam": map[string]any{"type": "dhcp"}}, "", "dhcp"},
		{"shim in private mode", map[string]any{"hostShim": true, "mode": "private", "ipam": map[string]any{"type": "moor-ipam"}}, "", `mode "private"`},
		{"shim in passthru mode", map[string]any{"hostShim": true, "mode": "passthru", "ipam": map[string]any{"type": "moor-ipam"}}, "", `mode "passthru"`},
		{"icc false in bridge mode", map[string]any{"icc": false, "mode": "bridge"}, "", `icc false: needs mode private`},
		{"icc false with a shim", map[string]any{"icc": false, "hostShim": true, "ipam": map[string]any{"type": "moor-ipam"}}, "", "icc false: cannot be combined with hostShim"},
		{"gateway mode", map[string]any{"gatewayModeIPv4": "routed"}, "", `gatewayModeIPv4 "routed": does not apply to driver macvlan`},
		{"gateway mode v6", map[string]any{"gatewayModeIPv6": "nat"}, "", `gatewayModeIPv6 "nat": does not apply to driver macvlan`},
		{"host binding", map[string]any{"hostBindingIPv4": "127.0.0.1"}, "", `hostBindingIPv4 "127.0.0.1": does not apply to driver macvlan`},
		{"host binding v6", map[string]any{"hostBindingIPv6": "::"}, "", `hostBindingIPv6 "::": does not apply to driver macvlan`},
		{"snat address", map[string]any{"snatAddress": "192.0.2.1"}, "", `snatAddress "192.0.2.1": does not apply to driver macvlan`},
		{"shim with linkInContainer", map[string]any{"hostShim": true, "linkInContainer": true, "ipam": map[string]any{"type": "moor-ipam"}}, "", "linkInContainer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.extra, tc.args)
			if err == nil || err.Code != 7 || !strings.Contains(err.Msg, tc.mentions) {
				t.Errorf("error %v, want code 7 mentioning %q", err, tc.mentions)
			}
		})
	}
}

// A config error is reported before anything touches the kernel: no root needed.
func TestAddRefusesBadConfigFirst(t *testing.T) {
	out, err := plugintest.Run(plugin, plugintest.Invocation{
		Command: "ADD", ContainerID: "c1", Netns: "/nonexistent/netns", IfName: "eth0",
		Config: plugintest.Config("1.0.0", "net1", "moor-macvlan", map[string]any{"mode": "nope"}),
	})
	if err == nil || err.Code != 7 || len(out) != 0 {
		t.Fatalf("error %v, output %q: want code 7 and no result", err, out)
	}
}

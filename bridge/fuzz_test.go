package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// FuzzBridgeConf feeds configs and CNI_ARGS through the framework's dispatch into
// loadConf (no kernel object is touched) and checks that a refusal is a config error with
// a code, never a panic or a 999, and that what loads satisfies every documented range.
func FuzzBridgeConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"moor-bridge","bridge":"br0","isGateway":true,"isDefaultGateway":true,"ipMasq":true,"mtu":1400,"hairpinMode":true,"ipam":{"type":"moor-ipam","subnet":"10.0.0.0/24"}}`), "")
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","vlan":100,"vlanTrunk":[{"id":5},{"minID":10,"maxID":20}],"preserveDefaultVlan":false}`), "IgnoreUnknown=1")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","firewallBackend":"nftables","ipMasqBackend":"iptables"}`), "")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","internal":true,"isDefaultGateway":true}`), "")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","vlanTrunk":[null]}`), "")
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"mac":"02:00:00:00:00:01","ips":["10.0.0.9/24"],"portMappings":[{"hostPort":8080,"containerPort":80}]}}`), "MAC=02:00:00:00:00:02")
	f.Fuzz(func(t *testing.T, config []byte, cniArgs string) {
		var c *conf
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error {
			var err error
			c, err = loadConf(call)
			return err
		}, config, cniArgs)
		plugintest.CheckConfigError(t, err)
		if err != nil {
			return
		}
		if e := utils.ValidateInterfaceName(c.BrName); e != nil {
			t.Fatalf("bridge %q loaded: %s", c.BrName, e.Msg)
		}
		if c.MTU != 0 && (c.MTU < mtuMin || c.MTU > mtuMax) {
			t.Fatalf("mtu %d loaded", c.MTU)
		}
		if c.Vlan < 0 || c.Vlan > vlanMax || len(c.trunkIDs) > vlanMax {
			t.Fatalf("vlan %d with %d trunk ids loaded", c.Vlan, len(c.trunkIDs))
		}
		if c.HairpinMode && c.PromiscMode || c.Internal && c.IsDefaultGW || c.IsDefaultGW && !c.IsGW {
			t.Fatalf("contradictory flags loaded: %+v", c)
		}
		switch c.FirewallBackend {
		case "", "nftables", "iptables":
		default:
			t.Fatalf("firewallBackend %q loaded", c.FirewallBackend)
		}
	})
}

// A vlanTrunk that repeats overlapping ranges expands to each id once: the expansion of a
// config near the stdin bound stays at most 4094 ids instead of growing with the entries
// (150,000 full ranges used to expand to 600 million ints, gigabytes).
func TestVlanTrunkExpansionIsBounded(t *testing.T) {
	entry := `{"minID":1,"maxID":4094},`
	n := plugins.MaxStdin/len(entry) - 10
	config := `{"cniVersion":"1.1.0","name":"n","vlanTrunk":[` + strings.Repeat(entry, n) + `{"id":7}]}`
	var c *conf
	err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error {
		var err error
		c, err = loadConf(call)
		return err
	}, []byte(config), "")
	if err != nil {
		t.Fatalf("loading %d trunk entries: %v", n, err)
	}
	if len(c.trunkIDs) != vlanMax {
		t.Fatalf("%d trunk entries expanded to %d ids, want %d", n+1, len(c.trunkIDs), vlanMax)
	}
}

// Every bridge field with a wrong type, range or combination is refused with code 7 (2 for
// another backend's option) naming the field; nothing of the kernel is touched (the same
// through the binary, in a test netns: integration/reliability_input_test.go).
func TestBridgeFieldsRefused(t *testing.T) {
	cases := []struct {
		field string
		value any
		code  uint
	}{
		{"bridge", 5, 7}, {"bridge", "a/b", 7}, {"bridge", "averyverylongbridgename", 7}, {"bridge", "br 0", 7},
		{"isGateway", "yes", 7}, {"isDefaultGateway", 1, 7}, {"forceAddress", "x", 7}, {"ipMasq", []int{1}, 7},
		{"ipMasqBackend", "pf", 7}, {"ipMasqBackend", 3, 7}, {"mtu", "big", 7}, {"mtu", 67, 7}, {"mtu", 65536, 7}, {"mtu", -1, 7},
		{"hairpinMode", "on", 7}, {"promiscMode", 2, 7}, {"vlan", 4095, 7}, {"vlan", -1, 7}, {"vlan", "5", 7},
		{"vlanTrunk", "5", 7}, {"vlanTrunk", []any{map[string]any{"id": 0}}, 7}, {"vlanTrunk", []any{map[string]any{"minID": 9, "maxID": 2}}, 7},
		{"vlanTrunk", []any{map[string]any{}}, 7}, {"vlanTrunk", []any{nil}, 7}, {"preserveDefaultVlan", "no", 7},
		{"macspoofchk", 1, 7}, {"enabledad", "y", 7}, {"disableContainerInterface", 0, 7}, {"portIsolation", "t", 7},
		{"isolation", "off", 7}, {"internal", "yes", 7}, {"firewallBackend", "pf", 7}, {"firewallBackend", true, 7},
		{"runtimeConfig", map[string]any{"mac": "zz"}, 7}, {"runtimeConfig", map[string]any{"ips": []string{"10.0.0.300"}}, 7},
		{"runtimeConfig", map[string]any{"portMappings": "80"}, 7}, {"args", map[string]any{"cni": map[string]any{"mac": "1"}}, 7},
		{"logFile", 5, 7}, {"capabilities", []string{"x"}, 7},
	}
	for _, tc := range cases {
		conf := map[string]any{"cniVersion": "1.1.0", "name": "n", "type": "moor-bridge", tc.field: tc.value}
		raw, _ := json.Marshal(conf)
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error { _, err := loadConf(call); return err }, raw, "")
		if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.field) {
			t.Errorf("%s = %v: got %v, want code %d naming the field", tc.field, tc.value, err, tc.code)
		}
	}
	// Combinations: the field named is the one to drop.
	for _, tc := range []struct {
		conf  map[string]any
		field string
		code  uint
	}{
		{map[string]any{"hairpinMode": true, "promiscMode": true}, "promiscMode", 7},
		{map[string]any{"internal": true, "isDefaultGateway": true}, "isDefaultGateway", 7},
		{map[string]any{"disableContainerInterface": true, "ipam": map[string]any{"type": "moor-ipam"}}, "disableContainerInterface", 7},
		{map[string]any{"firewallBackend": "nftables", "ipMasqBackend": "iptables"}, "ipMasqBackend", 7}, // a bad combination of fields: docs/errors.md
	} {
		tc.conf["cniVersion"], tc.conf["name"] = "1.1.0", "n"
		raw, _ := json.Marshal(tc.conf)
		err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error { _, err := loadConf(call); return err }, raw, "")
		if err == nil || err.Code != tc.code || !strings.Contains(err.Msg, tc.field) {
			t.Errorf("%v: got %v, want code %d naming %s", tc.conf, err, tc.code, tc.field)
		}
	}
}

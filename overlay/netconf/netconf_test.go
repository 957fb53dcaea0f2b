package netconf_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins/codes"
)

const minimal = `{"type":"moor-overlay","subnet":"10.240.0.0/16","store":{"endpoints":["http://10.0.0.1:2379"]}}`

func TestDefaults(t *testing.T) {
	c, err := netconf.Parse([]byte(minimal), "ov", "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "ov" || c.HostSubnetLen != 24 || c.VNI != 1 || c.Port != 4789 || c.Bridge != "moorov1" || c.VXLANDevice != "moorvx1" ||
		c.TTL != netconf.DefaultLeaseTTL || c.Store.Prefix != "/moor/overlay" || c.Store.Etcd.RequestTimeout != 5*time.Second ||
		!c.DefaultGateway() || c.AgentSocket != netconf.DefaultAgentSocket || c.Range.String() != "10.240.0.0/16" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestWireGuardDefaults(t *testing.T) {
	c, err := netconf.Parse([]byte(minimal[:len(minimal)-1]+`,"encryption":"wireguard","vni":7}`), "ov", "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Encrypted() || c.WireGuardDevice != "moorwg7" || c.WireGuardPort != netconf.DefaultWGPort || c.StateDir != netconf.DefaultStateDir {
		t.Fatalf("wireguard defaults: %+v", c)
	}
	if c, err := netconf.Parse([]byte(minimal), "ov", "1.1.0"); err != nil || c.Encrypted() {
		t.Fatalf("clear VXLAN is the default: encrypted %v, %v", c != nil && c.Encrypted(), err)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := []struct {
		conf  string
		code  uint
		field string
	}{
		{`{"subnet":"10.240.0.0/33"}`, codes.InvalidNetworkConfig, "subnet"},
		{`{"subnet":"10.240.0.0/16","hostSubnetLen":31}`, codes.InvalidNetworkConfig, "hostSubnetLen"},
		{`{"subnet":"10.240.0.0/16","vni":0,"store":{"endpoints":["e"]}}`, codes.InvalidNetworkConfig, "vni"}, // absent is the default 1; an explicit 0 is wrong
		{`{"subnet":"10.240.0.0/16","vni":-1}`, codes.InvalidNetworkConfig, "vni"},
		{`{"subnet":"10.240.0.0/16","port":70000}`, codes.InvalidNetworkConfig, "port"},
		{`{"subnet":"10.240.0.0/16","bridge":"a-name-longer-than-15"}`, codes.InvalidNetworkConfig, "bridge"},
		{`{"subnet":"10.240.0.0/16","bridge":"x","vxlanDevice":"x"}`, codes.InvalidNetworkConfig, "vxlanDevice"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"],"prefix":"rel"}}`, codes.InvalidNetworkConfig, "store.prefix"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"],"tls":{"certFile":"/c"}}}`, codes.InvalidNetworkConfig, "store.tls"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"],"requestTimeout":"-1s"}}`, codes.InvalidNetworkConfig, "store.requestTimeout"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"ipam":{"routes":[]}}`, codes.UnsupportedField, "ipam.routes"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"ipam":"x"}`, codes.InvalidNetworkConfig, "ipam"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"encryption":"ipsec"}`, codes.InvalidNetworkConfig, "encryption"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"encryption":"wireguard","wireguardPort":0}`, codes.InvalidNetworkConfig, "wireguardPort"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"encryption":"wireguard","stateDir":"rel/dir"}`, codes.InvalidNetworkConfig, "stateDir"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"bridge":"x","wireguardDevice":"x"}`, codes.InvalidNetworkConfig, "wireguardDevice"},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"encryption":"wireguard"}`, 0, ""},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"icc":false}`, 0, ""},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"gatewayModeIPv4":"routed"}`, codes.InvalidNetworkConfig, `gatewayModeIPv4 "routed": does not apply to driver overlay`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"gatewayModeIPv6":"nat"}`, codes.InvalidNetworkConfig, `gatewayModeIPv6 "nat": does not apply to driver overlay`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"hostBindingIPv4":"127.0.0.1"}`, codes.InvalidNetworkConfig, `hostBindingIPv4 "127.0.0.1": does not apply to driver overlay`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"hostBindingIPv6":"::"}`, codes.InvalidNetworkConfig, `hostBindingIPv6 "::": does not apply to driver overlay`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"snatAddress":"192.0.2.1"}`, codes.InvalidNetworkConfig, `snatAddress "192.0.2.1": needs ipMasq`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"ipMasq":true,"snatAddress":"2001:db8::1"}`, codes.InvalidNetworkConfig, `snatAddress "2001:db8::1": must be an IPv4 address`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"ipMasq":true,"snatAddress":"127.0.0.1"}`, codes.InvalidNetworkConfig, `snatAddress "127.0.0.1": must be a unicast address`},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"ipMasq":true,"snatAddress":"192.0.2.1"}`, 0, ""},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"internal":true}`, 0, ""},
		{`{"subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"internal":true,"ipMasq":true}`, codes.InvalidNetworkConfig, "ipMasq true: an internal network has nothing to masquerade"},
	}
	for _, tc := range cases {
		_, err := netconf.Parse([]byte(tc.conf), "ov", "1.1.0")
		if tc.code == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.conf, err)
			}
			continue
		}
		var coded codes.Coded
		if !errors.As(err, &coded) || coded.CNICode() != tc.code || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err %v, want code %d naming %s", tc.conf, err, tc.code, tc.field)
		}
	}
}

func TestHostID(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "machine-id")
	if err := os.WriteFile(file, []byte(" 0123abcd \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := netconf.Parse([]byte(`{"type":"moor-overlay","subnet":"10.240.0.0/16","store":{"endpoints":["e"]},"hostIDFile":"`+file+`"}`), "ov", "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ override, conf, want string }{{"", "", "0123abcd"}, {"", "conf-id", "conf-id"}, {"flag-id", "conf-id", "flag-id"}} {
		c.HostID = tc.conf
		got, err := c.ResolveHostID(tc.override)
		if err != nil || got != tc.want {
			t.Errorf("override %q conf %q: %q %v, want %q", tc.override, tc.conf, got, err, tc.want)
		}
	}
	c.HostID, c.HostIDFile = "", filepath.Join(dir, "missing")
	if _, err := c.ResolveHostID(""); err == nil || !strings.Contains(err.Error(), "hostIDFile") {
		t.Errorf("missing machine-id: %v", err)
	}
	if _, err := c.ResolveHostID("../etc"); err == nil {
		t.Error("a host ID with a slash was accepted")
	}
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "ov.conflist")
	data := `{"cniVersion":"1.1.0","name":"ov","plugins":[{"type":"moor-overlay","subnet":"10.240.0.0/16","store":{"endpoints":["e"]}},{"type":"moor-dns"}]}`
	if err := os.WriteFile(list, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := netconf.ParseFile(list)
	if err != nil || c.Name != "ov" || c.CNIVersion != "1.1.0" {
		t.Fatalf("ParseFile = %+v, %v", c, err)
	}
	other := filepath.Join(dir, "br.conflist")
	if err := os.WriteFile(other, []byte(`{"cniVersion":"1.1.0","name":"br","plugins":[{"type":"moor-bridge"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := netconf.ParseFile(other); !errors.Is(err, netconf.ErrNoOverlay) {
		t.Fatalf("a conflist without moor-overlay: %v", err)
	}
}

func TestExampleConflist(t *testing.T) {
	c, err := netconf.ParseFile(filepath.Join("..", "..", "examples", "overlay.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "overlay" || c.VNI != 42 || !c.IPMasq || c.Store.Endpoints[0] != "http://10.0.0.10:2379" {
		t.Fatalf("example: %+v", c)
	}
}

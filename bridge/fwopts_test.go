package main

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

func loadFine(t *testing.T, version, fields string) (*conf, *types.Error) {
	t.Helper()
	var c *conf
	err := plugintest.LoadOnly(plugin.Name, func(call *plugins.Call) error {
		var err error
		c, err = loadConf(call)
		return err
	}, []byte(`{"cniVersion":"`+version+`","name":"n","type":"moor-bridge","isGateway":true`+fields+`}`), "")
	return c, err
}

// TestFineOptionsRefused: bad values and contradictory combinations of the finer
// options are code 7 naming the field and the value, on every spec version.
func TestFineOptionsRefused(t *testing.T) {
	cases := []struct{ fields, field, value string }{
		{`,"gatewayModeIPv4":"bridge"`, "gatewayModeIPv4", "bridge"},
		{`,"gatewayModeIPv6":"isolated","ipMasq":true`, "gatewayModeIPv6", "isolated"},
		{`,"gatewayModeIPv4":"isolated","isDefaultGateway":true`, "gatewayModeIPv4", "isolated"},
		{`,"gatewayModeIPv4":"routed","internal":true`, "gatewayModeIPv4", "routed"},
		{`,"hostBindingIPv4":"::1"`, "hostBindingIPv4", "::1"},
		{`,"hostBindingIPv6":"127.0.0.1"`, "hostBindingIPv6", "127.0.0.1"},
		{`,"hostBindingIPv4":"224.0.0.1"`, "hostBindingIPv4", "224.0.0.1"},
		{`,"hostBindingIPv6":"::1"`, "hostBindingIPv6", "::1"},
		{`,"snatAddress":"x"`, "snatAddress", "x"},
		{`,"snatAddress":"192.0.2.9"`, "snatAddress", "192.0.2.9"}, // without ipMasq
		{`,"snatAddress":"192.0.2.9","ipMasq":true,"gatewayModeIPv4":"routed"`, "snatAddress", "192.0.2.9"},
		{`,"snatAddress":"0.0.0.0","ipMasq":true`, "snatAddress", "0.0.0.0"},
		{`,"snatAddressIPv6":"192.0.2.9","ipMasq":true`, "snatAddressIPv6", "192.0.2.9"},
		{`,"snatAddress":"fd00::8","snatAddressIPv6":"fd00::9","ipMasq":true`, "snatAddressIPv6", "fd00::9"},
		{`,"snatAddressIPv6":"fd00::9"`, "snatAddressIPv6", "fd00::9"}, // without ipMasq
		{`,"snatAddressIPv6":"fd00::9","ipMasq":true,"gatewayModeIPv6":"routed"`, "snatAddressIPv6", "fd00::9"},
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		for _, tc := range cases {
			_, err := loadFine(t, v, tc.fields)
			if err == nil || err.Code != codes.InvalidNetworkConfig ||
				!strings.Contains(err.Msg, tc.field) || !strings.Contains(err.Msg, tc.value) {
				t.Errorf("%s %s: got %v, want code 7 naming %s and %s", v, tc.fields, err, tc.field, tc.value)
			}
		}
		if _, err := loadFine(t, v, `,"icc":false,"gatewayModeIPv4":"routed","gatewayModeIPv6":"isolated","hostBindingIPv4":"127.0.0.1","snatAddress":"fd00::9","ipMasq":false`); err == nil {
			t.Errorf("%s: snatAddress without ipMasq loaded", v)
		}
		if _, err := loadFine(t, v, `,"icc":false,"gatewayModeIPv4":"nat","gatewayModeIPv6":"routed","hostBindingIPv4":"127.0.0.1","snatAddress":"192.0.2.9","ipMasq":true`); err != nil {
			t.Errorf("%s: a valid combination: %v", v, err)
		}
		if c, err := loadFine(t, v, `,"snatAddress":"192.0.2.9","snatAddressIPv6":"fd00::9","ipMasq":true`); err != nil || c.snat.String() != "192.0.2.9" || c.snat6.String() != "fd00::9" {
			t.Errorf("%s: both families' snat addresses: %v", v, err)
		}
	}
}

// TestHostBindingExpansion: a mapping without hostIP goes to the configured bindings of
// the families the attachment has; a mapping with hostIP is kept; no binding for the
// attachment's families is code 7 naming the binding.
func TestHostBindingExpansion(t *testing.T) {
	res := func(ips ...string) *current.Result {
		r := &current.Result{}
		for _, s := range ips {
			ip, n, _ := net.ParseCIDR(s)
			n.IP = ip
			r.IPs = append(r.IPs, &current.IPConfig{Address: *n})
		}
		return r
	}
	c, lerr := loadFine(t, "1.1.0", `,"hostBindingIPv4":"127.0.0.1","hostBindingIPv6":"fd00::1","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080},{"hostPort":81,"containerPort":81,"hostIP":"192.0.2.1"}]}`)
	if lerr != nil {
		t.Fatal(lerr)
	}
	ports, err := c.portMappings(res("10.0.0.2/24", "fd00::2/64"))
	if err != nil || len(ports) != 3 || ports[0].HostIP != "127.0.0.1" || ports[1].HostIP != "fd00::1" || ports[2].HostIP != "192.0.2.1" {
		t.Fatalf("dual stack: %+v, %v", ports, err)
	}
	ports, err = c.portMappings(res("10.0.0.2/24"))
	if err != nil || len(ports) != 2 || ports[0].HostIP != "127.0.0.1" {
		t.Fatalf("IPv4 only: %+v, %v", ports, err)
	}
	c, lerr = loadFine(t, "1.1.0", `,"hostBindingIPv6":"fd00::1","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080}]}`)
	if lerr != nil {
		t.Fatal(lerr)
	}
	_, err = c.portMappings(res("10.0.0.2/24"))
	var coded codes.Coded
	if !errors.As(err, &coded) || coded.CNICode() != codes.InvalidNetworkConfig || !strings.Contains(err.Error(), "hostBindingIPv6") {
		t.Fatalf("IPv6 binding, IPv4 attachment: %v", err)
	}
}

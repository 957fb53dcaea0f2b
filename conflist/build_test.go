package conflist

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func mustBuild(t *testing.T, spec Spec, networks, routes []Taken) (*Result, *Network) {
	t.Helper()
	res, err := Build(spec, networks, routes)
	if err != nil {
		t.Fatalf("Build(%+v): %v", spec, err)
	}
	n, err := Parse("", res.Data)
	if err != nil {
		t.Fatalf("parsing the result: %v\n%s", err, res.Data)
	}
	return res, n
}

func TestBridgeDefaults(t *testing.T) {
	res, n := mustBuild(t, Spec{Name: "web", Driver: "bridge"}, nil, nil)
	if n.Driver != "bridge" || n.CNIVersion != CNIVersion {
		t.Errorf("driver %q version %q", n.Driver, n.CNIVersion)
	}
	if want := DefaultBridgeName("web"); n.Conf.Bridge != want || len(want) != 15 {
		t.Errorf("bridge %q, want %q (15 characters)", n.Conf.Bridge, want)
	}
	if !n.Conf.IsGateway || !n.Conf.IsDefaultGateway || !n.Conf.IPMasq || n.Conf.Internal {
		t.Errorf("conf %+v", n.Conf)
	}
	caps := n.List.Plugins[0].Network.Capabilities
	if !caps["portMappings"] || !caps["ips"] || !caps["bandwidth"] {
		t.Errorf("capabilities %v", caps)
	}
	if n.DNS == nil || len(n.List.Plugins) != 2 || n.List.Plugins[1].Network.Type != "moor-dns" {
		t.Errorf("DNS must be chained by default: %s", res.Data)
	}
	if !n.List.Plugins[1].Network.Capabilities["aliases"] {
		t.Errorf("moor-dns must declare aliases: %s", res.Data)
	}
	if got := res.Subnets; len(got) != 1 || got[0].String() != "10.89.0.0/24" {
		t.Errorf("subnets %v, want the pool's first /24", got)
	}
	r := n.IPAM.Ranges[0][0]
	if r.Gateway.String() != "10.89.0.1" || n.IPAMType != "moor-ipam" {
		t.Errorf("range %+v type %q", r, n.IPAMType)
	}
}

func TestInternalHasNoWayOut(t *testing.T) {
	_, n := mustBuild(t, Spec{Name: "back", Driver: "bridge", Internal: true}, nil, nil)
	if !n.Conf.Internal || n.Conf.IPMasq || n.Conf.IsDefaultGateway || !n.Conf.IsGateway {
		t.Errorf("internal conf %+v", n.Conf)
	}
	_, err := Build(Spec{Name: "back", Driver: "bridge", Internal: true, Opts: []KV{{"ipMasq", "true"}}}, nil, nil)
	wantInvalid(t, err, "--opt")
}

func TestOptionsLabelsAndDNS(t *testing.T) {
	spec := Spec{
		Name: "web", Driver: "bridge", DNSDomain: "corp.test",
		Opts:     []KV{{"com.docker.network.bridge.name", "br-web"}, {"mtu", "1400"}, {"isolation", "false"}, {"firewallBackend", "iptables"}},
		Labels:   []KV{{"team", "db"}, {"env", "prod"}},
		IPAMOpts: []KV{{"dataDir", "/srv/ipam"}},
	}
	_, n := mustBuild(t, spec, nil, nil)
	if n.Conf.Bridge != "br-web" || n.Conf.MTU != 1400 || n.Conf.Isolated() || n.Conf.Firewall() != "iptables" {
		t.Errorf("conf %+v", n.Conf)
	}
	if n.Labels["team"] != "db" || n.Labels["env"] != "prod" {
		t.Errorf("labels %v", n.Labels)
	}
	if n.DNS == nil || n.DNS.Domain != "corp.test" {
		t.Errorf("dns %+v", n.DNS)
	}
	if n.IPAM.DataDir != "/srv/ipam" {
		t.Errorf("dataDir %q", n.IPAM.DataDir)
	}
	_, n = mustBuild(t, Spec{Name: "in", Driver: "bridge", Internal: true, DNSUpstreams: []string{"10.0.0.53", "10.0.0.54:5353"}}, nil, nil)
	if n.DNS == nil || !n.DNS.Internal || len(n.DNS.Upstreams) != 2 {
		t.Errorf("internal network's dns entry %+v", n.DNS)
	}
	off := false
	_, n = mustBuild(t, Spec{Name: "quiet", Driver: "bridge", DNS: &off}, nil, nil)
	if n.DNS != nil || len(n.List.Plugins) != 1 {
		t.Errorf("--disable-dns still chains moor-dns")
	}
}

func TestAddressFlags(t *testing.T) {
	spec := Spec{
		Name: "dual", Driver: "bridge",
		Subnets:  []string{"10.90.0.0/24", "fd00:90::/64"},
		Gateways: []string{"fd00:90::fe", "10.90.0.254"},
		IPRanges: []string{"10.90.0.128/25"},
	}
	_, n := mustBuild(t, spec, nil, nil)
	if len(n.IPAM.Ranges) != 2 {
		t.Fatalf("ranges %+v", n.IPAM.Ranges)
	}
	v4, v6 := n.IPAM.Ranges[0][0], n.IPAM.Ranges[1][0]
	if v4.Gateway.String() != "10.90.0.254" || v6.Gateway.String() != "fd00:90::fe" {
		t.Errorf("gateways %s %s", v4.Gateway, v6.Gateway)
	}
	// The block's last address is the subnet's broadcast: never handed out.
	if v4.RangeStart.String() != "10.90.0.128" || v4.RangeEnd.String() != "10.90.0.254" {
		t.Errorf("range %s-%s", v4.RangeStart, v4.RangeEnd)
	}
	_, n = mustBuild(t, Spec{Name: "low", Driver: "bridge", Subnets: []string{"10.91.0.0/24"}, IPRanges: []string{"10.91.0.0/26"}}, nil, nil)
	if r := n.IPAM.Ranges[0][0]; r.RangeStart.String() != "10.91.0.1" || r.RangeEnd.String() != "10.91.0.63" {
		t.Errorf("range %s-%s: the network address must be left out", r.RangeStart, r.RangeEnd)
	}
}

func TestIPv6PicksULA(t *testing.T) {
	res, n := mustBuild(t, Spec{Name: "six", Driver: "bridge", IPv6: true}, nil, nil)
	if len(res.Subnets) != 2 || !res.Subnets[1].Addr().Is6() || res.Subnets[1].Bits() != ulaBits {
		t.Fatalf("subnets %v", res.Subnets)
	}
	if b := res.Subnets[1].Addr().As16(); b[0] != ulaPrefixByte {
		t.Errorf("%s is not a unique local address", res.Subnets[1])
	}
	// Taken: the next subnet ID.
	again, _ := mustBuild(t, Spec{Name: "six", Driver: "bridge", IPv6: true}, NetworkTaken("other", res.Subnets), nil)
	if again.Subnets[1] == res.Subnets[1] || again.Subnets[1].Overlaps(res.Subnets[1]) {
		t.Errorf("taken ULA %s given again", res.Subnets[1])
	}
	if len(n.IPAM.Ranges) != 2 {
		t.Errorf("ranges %+v", n.IPAM.Ranges)
	}
}

func TestDefaultPoolSkipsTaken(t *testing.T) {
	taken := append(NetworkTaken("a", []netip.Prefix{netip.MustParsePrefix("10.89.0.0/24")}),
		Taken{Prefix: netip.MustParsePrefix("10.89.1.0/25"), Owner: "host route"},
		Taken{Prefix: netip.MustParsePrefix("10.89.2.0/23"), Owner: "host route"})
	res, _ := mustBuild(t, Spec{Name: "n", Driver: "bridge"}, taken, nil)
	if got := res.Subnets[0].String(); got != "10.89.4.0/24" {
		t.Errorf("picked %s, want 10.89.4.0/24", got)
	}
	full := []Taken{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Owner: "host route"}}
	_, err := Build(Spec{Name: "n", Driver: "bridge"}, nil, full)
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Errorf("a full pool: %v, want *ExhaustedError", err)
	}
}

func TestOverlapsRefused(t *testing.T) {
	networks := NetworkTaken("web", []netip.Prefix{netip.MustParsePrefix("10.92.0.0/16")})
	routes := []Taken{{Prefix: netip.MustParsePrefix("192.168.7.0/24"), Owner: "host route 192.168.7.0/24 dev eth0"}}
	for _, c := range []struct {
		spec    Spec
		mention string
	}{
		{Spec{Name: "x", Driver: "bridge", Subnets: []string{"10.92.3.0/24"}}, `network "web"`},
		{Spec{Name: "x", Driver: "bridge", Subnets: []string{"192.168.0.0/16"}}, "host route 192.168.7.0/24 dev eth0"},
		{Spec{Name: "x", Driver: "macvlan", Subnets: []string{"10.92.0.0/24"}}, `network "web"`},
	} {
		_, err := Build(c.spec, networks, routes)
		var ov *OverlapError
		if !errors.As(err, &ov) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%+v: %v, want an overlap with %s", c.spec.Subnets, err, c.mention)
		}
	}
	// macvlan networks share the LAN's subnet with the host: routes do not count.
	if _, err := Build(Spec{Name: "lan", Driver: "macvlan", Subnets: []string{"192.168.7.0/24"}}, networks, routes); err != nil {
		t.Errorf("macvlan on the host's LAN: %v", err)
	}
}

func TestOtherDrivers(t *testing.T) {
	_, n := mustBuild(t, Spec{Name: "h", Driver: "host", Opts: []KV{{"device", "eth1"}}}, nil, nil)
	if n.Type != "moor-host" || n.Conf.Device != "eth1" || n.IPAMType != "" || n.DNS != nil {
		t.Errorf("host network %+v", n)
	}
	_, n = mustBuild(t, Spec{Name: "no", Driver: "none"}, nil, nil)
	if n.Type != "moor-none" || len(n.List.Plugins) != 1 {
		t.Errorf("none network %+v", n)
	}
	_, n = mustBuild(t, Spec{Name: "lan", Driver: "macvlan", Opts: []KV{{"parent", "eth0"}, {"macvlan_mode", "vepa"}}}, nil, nil)
	if n.Conf.Master != "eth0" || n.Conf.Mode != "vepa" || n.DNS != nil || !n.List.Plugins[0].Network.Capabilities["ips"] || !n.List.Plugins[0].Network.Capabilities["bandwidth"] {
		t.Errorf("macvlan network %+v", n.Conf)
	}
	_, n = mustBuild(t, Spec{Name: "lan", Driver: "macvlan", Opts: []KV{{"icc", "false"}}}, nil, nil)
	if n.Options()["icc"] != "false" {
		t.Errorf("macvlan icc=false: options %v", n.Options())
	}
	for _, key := range []string{"gatewayModeIPv4", "com.docker.network.bridge.gateway_mode_ipv6", "hostBindingIPv6",
		"com.docker.network.bridge.host_binding_ipv4", "snatAddress", "com.docker.network.host_ipv4", "com.docker.network.host_ipv6"} {
		_, err := Build(Spec{Name: "lan", Driver: "macvlan", Opts: []KV{{key, "192.0.2.1"}}}, nil, nil)
		var inv *InvalidError
		if !errors.As(err, &inv) || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "does not apply to the macvlan driver") {
			t.Errorf("macvlan --opt %s: %v, want refused naming the option and the driver", key, err)
		}
	}
	on := true
	_, n = mustBuild(t, Spec{Name: "lan", Driver: "macvlan", DNS: &on}, nil, nil)
	if n.DNS == nil {
		t.Error("--dns on macvlan")
	}
	_, err := Build(Spec{Name: "o", Driver: "overlay"}, nil, nil)
	var un *UnavailableError
	if !errors.As(err, &un) || !strings.Contains(err.Error(), "not yet available") {
		t.Errorf("overlay: %v", err)
	}
}

func TestInvalidSpecs(t *testing.T) {
	on := true
	for _, c := range []struct {
		spec Spec
		flag string
	}{
		{Spec{Name: "bad name", Driver: "bridge"}, "NAME"},
		{Spec{Name: "x", Driver: "vlan"}, "--driver"},
		{Spec{Name: "x", Driver: "bridge", Subnets: []string{"10.1.0.0/24", "10.2.0.0/24"}}, "--subnet"},
		{Spec{Name: "x", Driver: "bridge", Subnets: []string{"10.1.0.1/24"}}, "--subnet"},
		{Spec{Name: "x", Driver: "bridge", Subnets: []string{"10.1.0.0/24"}, Gateways: []string{"10.2.0.1"}}, "--gateway"},
		{Spec{Name: "x", Driver: "bridge", Subnets: []string{"10.1.0.0/24"}, IPRanges: []string{"10.1.1.0/25"}}, "--ip-range"},
		{Spec{Name: "x", Driver: "bridge", Opts: []KV{{"nope", "1"}}}, "--opt"},
		{Spec{Name: "x", Driver: "bridge", Opts: []KV{{"mtu", "big"}}}, "--opt"},
		{Spec{Name: "x", Driver: "bridge", Opts: []KV{{"mtu", "20"}}}, "--opt"},
		{Spec{Name: "x", Driver: "bridge", Opts: []KV{{"bridge", "a-name-much-too-long"}}}, "--opt"},
		{Spec{Name: "x", Driver: "bridge", IPAMOpts: []KV{{"store", "etcd"}}}, "--ipam-opt"},
		{Spec{Name: "x", Driver: "bridge", IPAMOpts: []KV{{"dataDir", "relative"}}}, "address flags"},
		{Spec{Name: "x", Driver: "host", Subnets: []string{"10.1.0.0/24"}}, "--subnet"},
		{Spec{Name: "x", Driver: "none", DNS: &on}, "--dns"},
		{Spec{Name: "x", Driver: "macvlan", Internal: true}, "--internal"},
		{Spec{Name: "x", Driver: "macvlan", Opts: []KV{{"mode", "l3"}}}, "--opt"},
		{Spec{Name: "x", Driver: "macvlan", DNSDomain: "corp.test"}, "--dns-domain/--dns-upstream"},
		{Spec{Name: "x", Driver: "bridge", DNSDomain: "bad domain"}, "--dns-domain"},
		{Spec{Name: "x", Driver: "bridge", DNSUpstreams: []string{"dns.google"}}, "--dns-upstream"},
	} {
		_, err := Build(c.spec, nil, nil)
		wantInvalid(t, err, c.flag)
	}
}

func wantInvalid(t *testing.T, err error, flag string) {
	t.Helper()
	var inv *InvalidError
	if !errors.As(err, &inv) || inv.Flag != flag {
		t.Errorf("error %v, want an *InvalidError naming %s", err, flag)
	}
}

func TestRoutesTaken(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	routes := []netlink.Route{
		{Dst: nil, LinkIndex: 1},
		{Dst: cidr("0.0.0.0/0"), LinkIndex: 1},
		{Dst: cidr("10.5.0.0/16"), LinkIndex: 2},
		{Dst: cidr("fe80::/64"), LinkIndex: 2},
		{Dst: cidr("fd00:5::/64"), LinkIndex: 3},
	}
	got := RoutesTaken(routes, func(i int) string { return map[int]string{2: "eth0"}[i] })
	b, _ := json.Marshal(got)
	if len(got) != 2 || got[0].Owner != "host route 10.5.0.0/16 dev eth0" || got[1].Owner != "host route fd00:5::/64" {
		t.Errorf("taken %s", b)
	}
}

// TestFineBridgeOptions: the finer bridge options by their own and Docker's names; an
// isolated gateway mode turns masquerade and the default route off; bad values name
// the option.
func TestFineBridgeOptions(t *testing.T) {
	_, n := mustBuild(t, Spec{Name: "fine", Driver: "bridge", Opts: []KV{
		{"com.docker.network.bridge.enable_icc", "false"}, {"com.docker.network.bridge.gateway_mode_ipv6", "routed"},
		{"com.docker.network.bridge.host_binding_ipv4", "127.0.0.1"}, {"hostBindingIPv6", "fd00::1"},
		{"com.docker.network.host_ipv4", "192.0.2.9"}, {"com.docker.network.host_ipv6", "fd00::9"}}}, nil, nil)
	opts := n.Options()
	for k, want := range map[string]string{"icc": "false", "gatewayModeIPv6": "routed", "hostBindingIPv4": "127.0.0.1",
		"hostBindingIPv6": "fd00::1", "snatAddress": "192.0.2.9", "snatAddressIPv6": "fd00::9"} {
		if opts[k] != want {
			t.Errorf("option %s = %q, want %q (all: %v)", k, opts[k], want, opts)
		}
	}
	_, n = mustBuild(t, Spec{Name: "iso", Driver: "bridge", Opts: []KV{{"com.docker.network.bridge.gateway_mode_ipv4", "isolated"}}}, nil, nil)
	if n.Conf.IPMasq || n.Conf.IsDefaultGateway || n.DNS != nil {
		t.Errorf("isolated conf %+v, dns %+v", n.Conf, n.DNS)
	}
	on := true
	_, err := Build(Spec{Name: "x", Driver: "bridge", DNS: &on, Opts: []KV{{"gatewayModeIPv4", "isolated"}}}, nil, nil)
	wantInvalid(t, err, "--dns")
	for _, kv := range []KV{{"gatewayModeIPv4", "bridge"}, {"hostBindingIPv4", "::1"}, {"hostBindingIPv6", "127.0.0.1"},
		{"snatAddress", "nope"}, {"com.docker.network.host_ipv4", "fd00::9"}, {"com.docker.network.host_ipv6", "192.0.2.9"},
		{"snatAddressIPv6", "192.0.2.9"}, {"icc", "maybe"}} {
		_, err := Build(Spec{Name: "x", Driver: "bridge", Opts: []KV{kv}}, nil, nil)
		wantInvalid(t, err, "--opt")
		if err != nil && !strings.Contains(err.Error(), kv.Key+"="+kv.Value) {
			t.Errorf("%v does not name %s=%s", err, kv.Key, kv.Value)
		}
	}
	_, err = Build(Spec{Name: "x", Driver: "bridge", Opts: []KV{{"gatewayModeIPv6", "isolated"}, {"ipMasq", "true"}}}, nil, nil)
	wantInvalid(t, err, "--opt")
}

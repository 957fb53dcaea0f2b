package translate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/netavark/api"
	"github.com/moornet/moor/plugins"
)

// network decodes a netavark network as podman writes it.
func network(t *testing.T, js string) api.Network {
	t.Helper()
	var n api.Network
	if err := json.Unmarshal([]byte(js), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// plugin returns the i-th plugin of the config list as a map.
func plugin(t *testing.T, c *Conf, i int) map[string]any {
	t.Helper()
	if i >= len(c.List.Plugins) {
		t.Fatalf("config list has %d plugins, want plugin %d", len(c.List.Plugins), i)
	}
	var m map[string]any
	if err := json.Unmarshal(c.List.Plugins[i].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

const webNet = `{"name":"web","id":"2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
 "driver":"moor-bridge","network_interface":"mnv0",
 "subnets":[{"subnet":"10.88.0.0/16","gateway":"10.88.0.1","lease_range":{"start_ip":"10.88.0.100","end_ip":"10.88.0.199"}},
            {"subnet":"fd10::/64"}],
 "ipv6_enabled":true,"internal":false,"dns_enabled":true,"network_dns_servers":["192.0.2.53"],
 "options":{"mtu":"1400","isolate":"strict"},"ipam_options":{"driver":"host-local"}}`

func TestBuildBridge(t *testing.T) {
	c, err := Build(network(t, webNet), Options{DataDir: "/run/x/ipam"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Driver != "bridge" || c.Interface != "mnv0" || !c.DNS || c.List.Name != "web" {
		t.Errorf("conf %+v", c)
	}
	br := plugin(t, c, 0)
	for k, want := range map[string]any{"type": "moor-bridge", "bridge": "mnv0", "mtu": 1400.0, "isolation": true, "internal": false, "isDefaultGateway": true, "ipMasq": true} {
		if !reflect.DeepEqual(br[k], want) {
			t.Errorf("moor-bridge %s = %v, want %v", k, br[k], want)
		}
	}
	caps, _ := br["capabilities"].(map[string]any)
	if caps["portMappings"] != true || caps["ips"] != true {
		t.Errorf("capabilities %v", caps)
	}
	if c.IPAM.DataDir != "/run/x/ipam" || len(c.IPAM.Ranges) != 2 {
		t.Fatalf("ipam %+v", c.IPAM)
	}
	// podman allocates (MoorAllocates false): the range spans the subnet, whatever the lease range.
	r := c.IPAM.Ranges[0][0]
	if r.Gateway.String() != "10.88.0.1" || r.RangeStart.String() != "10.88.0.1" || r.RangeEnd.String() != "10.88.255.254" {
		t.Errorf("range %+v", r)
	}
	if got := c.Subnets(); len(got) != 2 || got[1].String() != "fd10::/64" {
		t.Errorf("subnets %v", got)
	}
	dns := plugin(t, c, 1)
	if dns["type"] != "moor-dns" || !reflect.DeepEqual(dns["upstreams"], []any{"192.0.2.53"}) {
		t.Errorf("moor-dns %v", dns)
	}
	if aliases, _ := dns["capabilities"].(map[string]any); aliases["aliases"] != true {
		t.Errorf("moor-dns capabilities %v", dns["capabilities"])
	}
}

func TestBuildLeaseRangeWhenMoorAllocates(t *testing.T) {
	c, err := Build(network(t, webNet), Options{MoorAllocates: true})
	if err != nil {
		t.Fatal(err)
	}
	r := c.IPAM.Ranges[0][0]
	if r.RangeStart.String() != "10.88.0.100" || r.RangeEnd.String() != "10.88.0.199" {
		t.Errorf("range %s-%s, want the lease range", r.RangeStart, r.RangeEnd)
	}
	if c.IPAM.DataDir != "/var/lib/moor/ipam" {
		t.Errorf("without Options.DataDir moor-ipam keeps its default, got %q", c.IPAM.DataDir)
	}
	// mtu stays a number through the edit.
	if plugin(t, c, 0)["mtu"] != 1400.0 {
		t.Errorf("mtu %v", plugin(t, c, 0)["mtu"])
	}
}

func TestBuildInternalWithoutDNS(t *testing.T) {
	n := network(t, `{"name":"back","id":"1","driver":"moor-netavark","subnets":[{"subnet":"10.77.0.0/24"}],
		"ipv6_enabled":false,"internal":true,"dns_enabled":false,"ipam_options":{"driver":"moor-ipam","dataDir":"/srv/ipam"},
		"options":{"isolate":"false","firewallBackend":"iptables"}}`)
	c, err := Build(n, Options{DataDir: "/run/x/ipam"})
	if err != nil {
		t.Fatal(err)
	}
	br := plugin(t, c, 0)
	if br["internal"] != true || br["isDefaultGateway"] != false || br["ipMasq"] != false || br["isolation"] != false {
		t.Errorf("internal network: %v", br)
	}
	if c.DNS || len(c.List.Plugins) != 1 {
		t.Errorf("DNS off: %d plugins", len(c.List.Plugins))
	}
	if c.FirewallBackend != "iptables" || c.IPAM.DataDir != "/srv/ipam" {
		t.Errorf("firewall %q dataDir %q: ipam_options.dataDir wins over the default", c.FirewallBackend, c.IPAM.DataDir)
	}
	if !strings.HasPrefix(c.Interface, "moor-") || len(c.Interface) != 15 {
		t.Errorf("default bridge %q", c.Interface)
	}
}

func TestBuildMacvlan(t *testing.T) {
	n := network(t, `{"name":"lan","id":"1","driver":"moor-macvlan","network_interface":"eth9",
		"subnets":[{"subnet":"192.168.9.0/24","gateway":"192.168.9.254"}],"ipv6_enabled":false,"internal":false,
		"dns_enabled":false,"options":{"mode":"private","mtu":"1500"}}`)
	c, err := Build(n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mv := plugin(t, c, 0)
	if mv["type"] != "moor-macvlan" || mv["master"] != "eth9" || mv["mode"] != "private" || c.Interface != "eth9" {
		t.Errorf("moor-macvlan %v", mv)
	}
	if g := c.IPAM.Ranges[0][0].Gateway.String(); g != "192.168.9.254" {
		t.Errorf("gateway %s", g)
	}
}

// TestBuildDockerOptions: Docker's option names (as `podman network create -o` passes
// them, and as podman's Docker-compatible API receives them) and netavark's isolate
// become moor-bridge's fields; on a macvlan network icc is kept and the gateway options
// are refused naming the option and the driver.
func TestBuildDockerOptions(t *testing.T) {
	n := network(t, `{"name":"fine","id":"1","driver":"moor-bridge","subnets":[{"subnet":"10.1.0.0/24"},{"subnet":"fd01::/64"}],
		"ipv6_enabled":true,"internal":false,"dns_enabled":false,"options":{
		"com.docker.network.bridge.enable_icc":"false",
		"com.docker.network.bridge.gateway_mode_ipv4":"routed",
		"com.docker.network.bridge.gateway_mode_ipv6":"nat",
		"com.docker.network.bridge.host_binding_ipv4":"127.0.0.1",
		"com.docker.network.bridge.host_binding_ipv6":"::",
		"com.docker.network.host_ipv6":"2001:db8::9",
		"isolate":"false"}}`)
	c, err := Build(n, Options{MoorAllocates: true})
	if err != nil {
		t.Fatal(err)
	}
	br := plugin(t, c, 0)
	for k, want := range map[string]any{"icc": false, "gatewayModeIPv4": "routed", "gatewayModeIPv6": "nat",
		"hostBindingIPv4": "127.0.0.1", "hostBindingIPv6": "::", "snatAddressIPv6": "2001:db8::9", "isolation": false} {
		if !reflect.DeepEqual(br[k], want) {
			t.Errorf("moor-bridge %s = %v, want %v", k, br[k], want)
		}
	}
	for k := range br {
		if strings.HasPrefix(k, "com.docker.") {
			t.Errorf("Docker's name %s left in the config", k)
		}
	}
	v4 := network(t, `{"name":"fine4","id":"1","driver":"moor-bridge","subnets":[{"subnet":"10.1.0.0/24"}],
		"ipv6_enabled":false,"internal":false,"dns_enabled":false,"options":{"com.docker.network.host_ipv4":"192.0.2.9"}}`)
	if c, err := Build(v4, Options{MoorAllocates: true}); err != nil || plugin(t, c, 0)["snatAddress"] != "192.0.2.9" {
		t.Errorf("com.docker.network.host_ipv4: %v", err)
	}

	mv := `{"name":"lan","id":"1","driver":"moor-macvlan","network_interface":"eth9","subnets":[{"subnet":"192.168.9.0/24"}],
		"ipv6_enabled":false,"internal":false,"dns_enabled":false,"options":{%s}}`
	c, err = Build(network(t, fmt.Sprintf(mv, `"icc":"false"`)), Options{})
	if err != nil || plugin(t, c, 0)["icc"] != false {
		t.Errorf("macvlan icc=false: %v", err)
	}
	for _, opt := range []string{"com.docker.network.bridge.gateway_mode_ipv4", "hostBindingIPv4", "com.docker.network.host_ipv4", "com.docker.network.bridge.enable_icc"} {
		_, err := Build(network(t, fmt.Sprintf(mv, `"`+opt+`":"192.0.2.1"`)), Options{})
		if err == nil || !strings.Contains(err.Error(), opt) || !strings.Contains(err.Error(), "macvlan") {
			t.Errorf("macvlan %s: %v, want refused naming the option and the driver", opt, err)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	base := `{"name":"n","id":"1","driver":"moor-bridge","subnets":[{"subnet":"10.1.0.0/24"}],"ipv6_enabled":false,"internal":false,"dns_enabled":false`
	cases := []struct {
		name, js, mentions string
		unsupported        bool
	}{
		{"driver", `{"name":"n","id":"1","driver":"bridge","ipv6_enabled":false,"internal":false,"dns_enabled":false}`, `driver "bridge"`, false},
		{"subnet", strings.Replace(base, "10.1.0.0/24", "10.1.0.0/33", 1) + `}`, `10.1.0.0/33`, false},
		{"host bits", strings.Replace(base, "10.1.0.0/24", "10.1.0.5/24", 1) + `}`, `host bits`, false},
		{"two IPv4 subnets", strings.Replace(base, `{"subnet":"10.1.0.0/24"}`, `{"subnet":"10.1.0.0/24"},{"subnet":"10.2.0.0/24"}`, 1) + `}`, `at most one IPv4`, false},
		{"gateway", strings.Replace(base, `"10.1.0.0/24"}`, `"10.1.0.0/24","gateway":"10.9.0.1"}`, 1) + `}`, `10.9.0.1`, false},
		{"lease range", strings.Replace(base, `"10.1.0.0/24"}`, `"10.1.0.0/24","lease_range":{"start_ip":"10.2.0.1"}}`, 1) + `}`, `lease_range.start_ip "10.2.0.1"`, false},
		{"mtu", base + `,"options":{"mtu":"20"}}`, `mtu=20`, false},
		{"unknown option", base + `,"options":{"colour":"blue"}}`, `colour`, false},
		{"isolate", base + `,"options":{"isolate":"maybe"}}`, `options.isolate "maybe"`, false},
		{"vrf", base + `,"options":{"vrf":"blue"}}`, `options.vrf`, true},
		{"bridge mode", base + `,"options":{"mode":"unmanaged"}}`, `options.mode`, true},
		{"ipam driver", base + `,"ipam_options":{"driver":"dhcp"}}`, `ipam_options.driver "dhcp"`, true},
		{"ipam option", base + `,"ipam_options":{"colour":"blue"}}`, `colour`, false},
		{"routes", base + `,"routes":[{"destination":"10.5.0.0/16","gateway":"10.1.0.1"}]}`, `routes "10.5.0.0/16"`, false},
		{"dns server", base + `,"dns_enabled":true,"network_dns_servers":["dns.example"]}`, `dns.example`, false},
		{"internal macvlan", strings.Replace(base, `"internal":false`, `"internal":true`, 1) + `}`, ``, false},
	}
	cases[len(cases)-1].js = strings.Replace(cases[len(cases)-1].js, "moor-bridge", "moor-macvlan", 1)
	cases[len(cases)-1].mentions = "internal"
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(network(t, c.js), Options{MoorAllocates: true})
			if err == nil || !strings.Contains(err.Error(), c.mentions) {
				t.Fatalf("error %v, want one mentioning %q", err, c.mentions)
			}
			var fe *FieldError
			if c.unsupported && (!errors.As(err, &fe) || !fe.Unsupported) {
				t.Errorf("error %v is not an unsupported FieldError", err)
			}
		})
	}
}

func TestCompletePicksAndKeeps(t *testing.T) {
	n := network(t, `{"name":"web","id":"abc","driver":"moor-bridge","ipv6_enabled":true,"internal":false,
		"dns_enabled":true,"created":"2024-05-01T10:00:00Z","labels":{"team":"a"}}`)
	taken := []conflist.Taken{{Prefix: netip.MustParsePrefix("10.89.0.0/24"), Owner: `network "other"`}}
	routes := []conflist.Taken{{Prefix: netip.MustParsePrefix("10.89.1.0/24"), Owner: "host route"}}
	out, err := Complete(n, Options{Networks: taken, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	if out.Name != n.Name || out.ID != n.ID || out.Driver != n.Driver {
		t.Errorf("name, id or driver changed: %+v", out)
	}
	if len(out.Subnets) != 2 || out.Subnets[0].Subnet != "10.89.2.0/24" || out.Subnets[0].Gateway != "10.89.2.1" {
		t.Fatalf("subnets %+v, want 10.89.2.0/24 (the first free) and a ULA", out.Subnets)
	}
	if !strings.HasPrefix(out.Subnets[1].Subnet, "fd") || !out.IPv6Enabled {
		t.Errorf("IPv6 subnet %+v enabled %v", out.Subnets[1], out.IPv6Enabled)
	}
	if !strings.HasPrefix(out.NetworkInterface, "moor-") || out.IPAMOptions["driver"] != IPAMHostLocal {
		t.Errorf("interface %q ipam %v", out.NetworkInterface, out.IPAMOptions)
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	_ = json.Unmarshal(data, &back)
	if back["created"] != "2024-05-01T10:00:00Z" || !reflect.DeepEqual(back["labels"], map[string]any{"team": "a"}) {
		t.Errorf("fields moor does not know were not kept: %s", data)
	}
	// Completing the completed network changes nothing: setup builds the same list.
	again, err := Complete(out, Options{Networks: taken, Routes: routes})
	if err != nil || !reflect.DeepEqual(again, out) {
		t.Errorf("second Complete: %v\n%+v\n%+v", err, again, out)
	}
}

func TestCompleteKeepsLeaseRangeAndMoorIPAM(t *testing.T) {
	n := network(t, `{"name":"w","id":"1","driver":"moor-bridge","subnets":[{"subnet":"10.3.0.0/24","lease_range":{"start_ip":"10.3.0.50"}}],
		"ipv6_enabled":false,"internal":false,"dns_enabled":false,"ipam_options":{"driver":"moor-ipam"}}`)
	out, err := Complete(n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if lr := out.Subnets[0].LeaseRange; lr == nil || lr.StartIP != "10.3.0.50" || out.IPAMOptions["driver"] != IPAMMoor {
		t.Errorf("subnet %+v ipam %v", out.Subnets[0], out.IPAMOptions)
	}
	if _, err := Complete(network(t, `{"name":"bad name","id":"1","driver":"moor-bridge","ipv6_enabled":false,"internal":false,"dns_enabled":false}`), Options{}); err == nil {
		t.Error("a network name with a space was accepted")
	}
}

func TestRuntimeConf(t *testing.T) {
	c, err := Build(network(t, webNet), Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := api.Exec{
		ContainerID: "752947ff91f961eb", ContainerName: "testctr",
		PortMappings:   []api.PortMapping{{ContainerPort: 80, HostPort: 8080, Protocol: "tcp,udp", Range: 2, HostIP: "127.0.0.1"}},
		NetworkOptions: api.PerNetworkOptions{InterfaceName: "eth0", StaticIPs: []string{"10.88.0.50", "fd10::50"}, StaticMAC: "AA:BB:CC:DD:AA:00", Aliases: []string{"752947ff91f9", "Web", "web"}},
	}
	rt, err := RuntimeConf(x, "/run/netns/c1", c)
	if err != nil {
		t.Fatal(err)
	}
	if rt.ContainerID != x.ContainerID || rt.NetNS != "/run/netns/c1" || rt.IfName != "eth0" {
		t.Errorf("rt %+v", rt)
	}
	wantArgs := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "testctr"}, {"MAC", "aa:bb:cc:dd:aa:00"}}
	if !reflect.DeepEqual(rt.Args, wantArgs) {
		t.Errorf("args %v", rt.Args)
	}
	if got := rt.CapabilityArgs["ips"]; !reflect.DeepEqual(got, []string{"10.88.0.50/16", "fd10::50/64"}) {
		t.Errorf("ips %v", got)
	}
	if got := rt.CapabilityArgs["aliases"]; !reflect.DeepEqual(got, []string{"752947ff91f9", "Web"}) {
		t.Errorf("aliases %v", got)
	}
	ports, _ := rt.CapabilityArgs["portMappings"].([]plugins.PortMapping)
	want := []plugins.PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"}, {HostPort: 8081, ContainerPort: 81, Protocol: "tcp", HostIP: "127.0.0.1"},
		{HostPort: 8080, ContainerPort: 80, Protocol: "udp", HostIP: "127.0.0.1"}, {HostPort: 8081, ContainerPort: 81, Protocol: "udp", HostIP: "127.0.0.1"},
	}
	if !reflect.DeepEqual(ports, want) {
		t.Errorf("ports %+v", ports)
	}
	if MoorAllocates(x) {
		t.Error("static_ips given, yet moor allocates")
	}

	// Without DNS the aliases are ignored, as netavark asks.
	noDNS := network(t, strings.Replace(webNet, `"dns_enabled":true`, `"dns_enabled":false`, 1))
	noDNS.DNSServers = nil
	c2, err := Build(noDNS, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x.NetworkOptions.Aliases = []string{"bad alias"}
	if rt, err := RuntimeConf(x, "/run/netns/c1", c2); err != nil || rt.CapabilityArgs["aliases"] != nil {
		t.Errorf("aliases without DNS: %v %v", err, rt)
	}
}

func TestRuntimeConfRefuses(t *testing.T) {
	c, err := Build(network(t, webNet), Options{})
	if err != nil {
		t.Fatal(err)
	}
	good := api.Exec{ContainerID: "c1", NetworkOptions: api.PerNetworkOptions{InterfaceName: "eth0"}}
	cases := []struct {
		name     string
		change   func(x *api.Exec)
		netns    string
		mentions string
	}{
		{"netns", func(*api.Exec) {}, "", "netns"},
		{"container id", func(x *api.Exec) { x.ContainerID = "" }, "/n", "container_id"},
		{"ifname", func(x *api.Exec) { x.NetworkOptions.InterfaceName = "" }, "/n", "interface_name"},
		{"static ip", func(x *api.Exec) { x.NetworkOptions.StaticIPs = []string{"10.99.0.1"} }, "/n", `static_ips[0] "10.99.0.1"`},
		{"bad ip", func(x *api.Exec) { x.NetworkOptions.StaticIPs = []string{"ten"} }, "/n", `"ten"`},
		{"mac", func(x *api.Exec) { x.NetworkOptions.StaticMAC = "aa:bb" }, "/n", "static_mac"},
		{"host port", func(x *api.Exec) { x.PortMappings = []api.PortMapping{{ContainerPort: 80}} }, "/n", "host_port"},
		{"range", func(x *api.Exec) {
			x.PortMappings = []api.PortMapping{{ContainerPort: 80, HostPort: 65535, Range: 2}}
		}, "/n", "port_mappings[0].range"},
		{"protocol", func(x *api.Exec) {
			x.PortMappings = []api.PortMapping{{ContainerPort: 80, HostPort: 80, Protocol: "tcp,icmp"}}
		}, "/n", "tcp,icmp"},
		{"host ip", func(x *api.Exec) {
			x.PortMappings = []api.PortMapping{{ContainerPort: 80, HostPort: 80, HostIP: "localhost"}}
		}, "/n", "host_ip"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := good
			tc.change(&x)
			_, err := RuntimeConf(x, tc.netns, c)
			if err == nil || !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.mentions)
			}
		})
	}
}

func TestStatusFromResult(t *testing.T) {
	zero, one, two := 0, 1, 2
	res := &current.Result{
		Interfaces: []*current.Interface{
			{Name: "mnv0", Mac: "02:00:00:00:00:01"},
			{Name: "vethx", Mac: "02:00:00:00:00:02"},
			{Name: "eth0", Mac: "AA:BB:CC:DD:AA:00", Sandbox: "/run/netns/c1"},
		},
		IPs: []*current.IPConfig{
			{Interface: &two, Address: net.IPNet{IP: net.ParseIP("10.88.0.50").To4(), Mask: net.CIDRMask(16, 32)}, Gateway: net.ParseIP("10.88.0.1")},
			{Interface: &two, Address: net.IPNet{IP: net.ParseIP("fd10::50"), Mask: net.CIDRMask(64, 128)}},
			{Interface: &zero, Address: net.IPNet{IP: net.ParseIP("10.88.0.1").To4(), Mask: net.CIDRMask(16, 32)}},
			{Interface: &one, Address: net.IPNet{IP: net.ParseIP("10.88.0.9").To4(), Mask: net.CIDRMask(16, 32)}},
		},
	}
	res.DNS.Nameservers = []string{"10.88.0.1"}
	res.DNS.Search = []string{"dns.moor"}
	st, err := Status(res, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	want := api.StatusBlock{
		DNSSearchDomains: []string{"dns.moor"}, DNSServerIPs: []string{"10.88.0.1"},
		Interfaces: map[string]api.NetInterface{"eth0": {MACAddress: "aa:bb:cc:dd:aa:00", Subnets: []api.NetAddress{
			{Gateway: "10.88.0.1", IPNet: "10.88.0.50/16"}, {IPNet: "fd10::50/64"},
		}}},
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("status\n%+v\nwant\n%+v", st, want)
	}
	if _, err := Status(res, "eth1"); err == nil {
		t.Error("an interface the result does not name was reported")
	}
	// No DNS in the result: empty lists, never null (netavark's types take both, podman's too).
	data, _ := json.Marshal(api.StatusBlock{DNSSearchDomains: []string{}, DNSServerIPs: []string{}, Interfaces: map[string]api.NetInterface{}})
	if !strings.Contains(string(data), `"dns_server_ips":[]`) {
		t.Errorf("%s", data)
	}
}

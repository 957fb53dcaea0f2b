package firewall

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/codes"
)

func TestLabelRoundTrip(t *testing.T) {
	for _, l := range []label{
		{Base: "forward"},
		{Net: "n1", Rule: "masquerade:10.0.0.0/24"},
		{Net: "n1", ID: "abc", If: "eth0", Rule: ruleDNAT, Fam: "6", Proto: "udp", Host: "2001:db8::1", Port: "53"},
	} {
		got, ok := parseLabel(l.String())
		if !ok || got != l {
			t.Errorf("parseLabel(%q) = %+v, %v; want %+v", l.String(), got, ok, l)
		}
	}
	for _, foreign := range []string{"", "moor", "docker net=x", "moor net", "moor color=red", "moor net="} {
		if _, ok := parseLabel(foreign); ok {
			t.Errorf("parseLabel(%q) accepted a label moor did not write", foreign)
		}
	}
	l := label{Net: "n", ID: "c", If: "eth0", Rule: ruleDNAT, Fam: "4", Proto: "tcp", Host: "*", Port: "80"}
	if got, want := l.describe(), "rule=dnat fam=4 proto=tcp host=* port=80"; got != want {
		t.Errorf("describe = %q, want %q", got, want)
	}
	if got := l.key(); got != (AttachmentKey{Network: "n", ContainerID: "c", IfName: "eth0"}) {
		t.Errorf("key = %v", got)
	}
}

func TestSplitArgsAndParseLines(t *testing.T) {
	got, err := splitArgs(`-A MOOR-X -s 10.0.0.0/24 -m comment --comment "moor net=a rule=x" -j DNAT --to-destination [fd00::2]:80`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-A", "MOOR-X", "-s", "10.0.0.0/24", "-m", "comment", "--comment", "moor net=a rule=x",
		"-j", "DNAT", "--to-destination", "[fd00::2]:80"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("splitArgs = %q, want %q", got, want)
	}
	if got, _ := splitArgs(`a "b \"c\" d" e`); !reflect.DeepEqual(got, []string{"a", `b "c" d`, "e"}) {
		t.Fatalf("escaped quotes: %q", got)
	}
	if _, err := splitArgs(`a "b`); err == nil {
		t.Fatal("unterminated quote accepted")
	}
	lines, err := parseIPTLines([]string{
		"-N MOOR-X",
		`-A MOOR-X -m comment --comment "moor net=a rule=x" -j ACCEPT`,
		`-A MOOR-X -m comment --comment "docker rule" -j ACCEPT`,
		`-A MOOR-X -j DROP`,
	})
	if err != nil || len(lines) != 1 || lines[0].label.Rule != "x" || lines[0].args[len(lines[0].args)-1] != "ACCEPT" {
		t.Fatalf("parseIPTLines = %+v, %v; want the one moor rule", lines, err)
	}
}

func testNet() Network {
	_, s4, _ := net.ParseCIDR("10.1.0.0/24")
	_, s6, _ := net.ParseCIDR("fd00:1::/64")
	return Network{Name: "n1", Bridge: "br-n1", Subnets: []*net.IPNet{s4, s6}, IPMasq: true, Isolate: true}
}

func codeOf(err error) uint {
	var c codes.Coded
	if errors.As(err, &c) {
		return c.CNICode()
	}
	return 0
}

func TestPlanNetworkValidation(t *testing.T) {
	for name, edit := range map[string]func(*Network){
		"empty name":        func(n *Network) { n.Name = "" },
		"space in name":     func(n *Network) { n.Name = "a b" },
		"long bridge":       func(n *Network) { n.Bridge = strings.Repeat("b", 16) },
		"nil subnet":        func(n *Network) { n.Subnets = append(n.Subnets, nil) },
		"very long name":    func(n *Network) { n.Name = strings.Repeat("n", 250) },
		"mismatched family": func(n *Network) { n.Subnets[0].Mask = net.CIDRMask(64, 128) },
	} {
		n := testNet()
		edit(&n)
		if _, err := planNetwork(n); codeOf(err) != codes.InvalidNetworkConfig {
			t.Errorf("%s: got %v, want code 7", name, err)
		}
	}
	_, odd, _ := net.ParseCIDR("10.2.0.0/16")
	odd.IP = net.ParseIP("10.2.3.4") // unmasked host bits are dropped
	n := testNet()
	n.Subnets = append(n.Subnets, odd)
	p, err := planNetwork(n)
	if err != nil || len(p.subnets[fam4]) != 2 || p.subnets[fam4][1].String() != "10.2.0.0/16" || len(p.subnets[fam6]) != 1 {
		t.Fatalf("planNetwork = %+v, %v", p.subnets, err)
	}
}

func TestPlanPorts(t *testing.T) {
	p, err := planNetwork(testNet())
	if err != nil {
		t.Fatal(err)
	}
	ip4, ip6 := net.ParseIP("10.1.0.2"), net.ParseIP("fd00:1::2")
	att := func(ports ...PortMapping) Attachment {
		return Attachment{Network: "n1", ContainerID: "c1", IfName: "eth0", IPs: []net.IP{ip4, ip6}, Ports: ports}
	}
	rules, err := planPorts(p, att(PortMapping{HostPort: 80, ContainerPort: 8080}))
	if err != nil || len(rules) != 2 || rules[0].fam != fam4 || rules[1].fam != fam6 ||
		!rules[1].containerIP.Equal(ip6) || rules[0].proto != "tcp" || rules[0].hostIP != nil {
		t.Fatalf("empty hostIP: %+v, %v; want one tcp rule per family", rules, err)
	}
	rules, err = planPorts(p, att(PortMapping{HostPort: 53, ContainerPort: 53, Protocol: "UDP", HostIP: "0.0.0.0"}))
	if err != nil || len(rules) != 1 || rules[0].hostIP != nil || rules[0].proto != "udp" {
		t.Fatalf("0.0.0.0: %+v, %v; want one any-address IPv4 udp rule", rules, err)
	}
	rules, err = planPorts(p, att(PortMapping{HostPort: 1, ContainerPort: 1, Protocol: "sctp", HostIP: "2001:db8::1"}))
	if err != nil || len(rules) != 1 || rules[0].fam != fam6 || rules[0].host() != "2001:db8::1" {
		t.Fatalf("v6 hostIP: %+v, %v", rules, err)
	}
	v4only := att(PortMapping{HostPort: 80, ContainerPort: 80, HostIP: "::"})
	v4only.IPs = []net.IP{ip4}
	for name, a := range map[string]Attachment{
		"icmp":                att(PortMapping{HostPort: 1, ContainerPort: 1, Protocol: "icmp"}),
		"host port 0":         att(PortMapping{HostPort: 0, ContainerPort: 1}),
		"container port 2^16": att(PortMapping{HostPort: 1, ContainerPort: 65536}),
		"bad hostIP":          att(PortMapping{HostPort: 1, ContainerPort: 1, HostIP: "localhost"}),
		"v6 loopback":         att(PortMapping{HostPort: 1, ContainerPort: 1, HostIP: "::1"}),
		"v6 without v6 IP":    v4only,
		"other network":       {Network: "n2", ContainerID: "c", IfName: "eth0"},
		"space in ID":         {Network: "n1", ContainerID: "c 1", IfName: "eth0"},
	} {
		if _, err := planPorts(p, a); codeOf(err) != codes.InvalidNetworkConfig {
			t.Errorf("%s: got %v, want code 7", name, err)
		}
	}
}

func TestPortsClash(t *testing.T) {
	k := func(fam, proto, host, port string) portKey { return portKey{fam, proto, host, port} }
	for _, tc := range []struct {
		a, b  portKey
		clash bool
	}{
		{k("4", "tcp", "*", "80"), k("4", "tcp", "*", "80"), true},
		{k("4", "tcp", "*", "80"), k("4", "tcp", "10.0.0.1", "80"), true},
		{k("4", "tcp", "10.0.0.1", "80"), k("4", "tcp", "10.0.0.1", "80"), true},
		{k("4", "tcp", "10.0.0.1", "80"), k("4", "tcp", "10.0.0.2", "80"), false},
		{k("4", "tcp", "*", "80"), k("4", "udp", "*", "80"), false},
		{k("4", "tcp", "*", "80"), k("6", "tcp", "*", "80"), false},
		{k("4", "tcp", "*", "80"), k("4", "tcp", "*", "81"), false},
	} {
		if got := portsClash(tc.a, tc.b); got != tc.clash || portsClash(tc.b, tc.a) != tc.clash {
			t.Errorf("portsClash(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.clash)
		}
	}
	p, _ := planNetwork(testNet())
	rules, _ := planPorts(p, Attachment{Network: "n1", ContainerID: "c1", IfName: "eth0",
		IPs: []net.IP{net.ParseIP("10.1.0.2")}, Ports: []PortMapping{{HostPort: 80, ContainerPort: 80}}})
	self := AttachmentKey{Network: "n1", ContainerID: "c1", IfName: "eth0"}
	mine := rules[0].label(self, ruleDNAT)
	if err := checkPortConflicts(rules, self, []label{mine}); err != nil {
		t.Fatalf("own rule reported as conflict: %v", err)
	}
	other := mine
	other.ID = "c2"
	err := checkPortConflicts(rules, self, []label{other})
	var pe *PortInUseError
	if !errors.As(err, &pe) || codeOf(err) != codes.PortInUse || pe.Holder.ContainerID != "c2" {
		t.Fatalf("conflict with c2: %v", err)
	}
}

func TestRequiredSysctls(t *testing.T) {
	got := RequiredSysctls(testNet())
	want := []Sysctl{
		{Path: "net/ipv4/ip_forward", Value: "1"},
		{Path: "net/ipv4/conf/br-n1/route_localnet", Value: "1"},
		{Path: "net/ipv6/conf/all/forwarding", Value: "1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RequiredSysctls = %+v, want %+v", got, want)
	}
	if err := ApplySysctls(nil, []Sysctl{{Path: "net/../../etc/x", Value: "1"}}); codeOf(err) != codes.InvalidNetworkConfig {
		t.Fatalf("ApplySysctls with ..: %v", err)
	}
}

func TestGCHelper(t *testing.T) {
	f := &fakeBackend{keys: []AttachmentKey{{"n", "a", "eth0"}, {"n", "b", "eth0"}, {"n", "b", "eth1"}}}
	if err := GC(f, "n", []AttachmentKey{{"n", "b", "eth0"}}); err != nil {
		t.Fatal(err)
	}
	want := []AttachmentKey{{"n", "a", "eth0"}, {"n", "b", "eth1"}}
	if !reflect.DeepEqual(f.deleted, want) {
		t.Fatalf("GC deleted %v, want %v", f.deleted, want)
	}
}

// fakeBackend records DelAttachment calls for TestGCHelper.
type fakeBackend struct {
	Backend
	keys    []AttachmentKey
	deleted []AttachmentKey
}

func (f *fakeBackend) Attachments(string) ([]AttachmentKey, error) { return f.keys, nil }

func (f *fakeBackend) DelAttachment(network, id, ifName string) error {
	f.deleted = append(f.deleted, AttachmentKey{network, id, ifName})
	return nil
}

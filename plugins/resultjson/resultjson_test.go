package resultjson

import (
	"bytes"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// library is what the CNI library prints for r.
func library(t testing.TB, r *current.Result) ([]byte, error) {
	t.Helper()
	var b bytes.Buffer
	err := r.PrintTo(&b)
	return b.Bytes(), err
}

func compare(t *testing.T, name string, r *current.Result) {
	t.Helper()
	want, err := library(t, r)
	got, ok := Append(nil, r)
	if err != nil {
		if ok {
			t.Errorf("%s: the library fails (%v) but Append wrote\n%s", name, err, got)
		}
		return
	}
	if !ok {
		t.Errorf("%s: Append declined a result the library prints:\n%s", name, want)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: differs from the library\n got: %s\nwant: %s", name, got, want)
	}
}

func ptr(i int) *int { return &i }

func cidr(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

// TestAppendMatchesLibrary: results a plugin returns, and their edges, byte for byte as
// PrintTo writes them, in every spec version this shape is printed in.
func TestAppendMatchesLibrary(t *testing.T) {
	bridge := func() *current.Result {
		return &current.Result{
			Interfaces: []*current.Interface{
				{Name: "moor0", Mac: "02:42:0a:58:00:01"},
				{Name: "veth1a2b3c4d", Mac: "6e:11:22:33:44:55"},
				{Name: "eth0", Mac: "02:42:0a:58:00:05", Mtu: 1500, Sandbox: "/var/run/netns/cni-1234"},
			},
			IPs: []*current.IPConfig{
				{Interface: ptr(2), Address: cidr("10.88.0.5/16"), Gateway: net.ParseIP("10.88.0.1").To4()},
				{Interface: ptr(2), Address: cidr("fd00:88::5/64"), Gateway: net.ParseIP("fd00:88::1")},
			},
			Routes: []*types.Route{
				{Dst: cidr("0.0.0.0/0"), GW: net.ParseIP("10.88.0.1")},
				{Dst: cidr("::/0")},
			},
			DNS: types.DNS{Nameservers: []string{"10.88.0.1"}, Domain: "dns.moor", Search: []string{"dns.moor"}, Options: []string{"ndots:1"}},
		}
	}
	cases := []struct {
		name string
		edit func(r *current.Result)
	}{
		{"bridge dual stack", func(*current.Result) {}},
		{"no dns", func(r *current.Result) { r.DNS = types.DNS{} }},
		{"dns domain only", func(r *current.Result) { r.DNS = types.DNS{Domain: "x"} }},
		{"empty result", func(r *current.Result) { *r = current.Result{CNIVersion: r.CNIVersion} }},
		{"no version", func(r *current.Result) { r.CNIVersion = "" }},
		{"ipam result, no interface index", func(r *current.Result) {
			r.Interfaces = nil
			r.IPs[0].Interface, r.IPs[1].Interface, r.IPs[1].Gateway = nil, nil, nil
		}},
		{"empty lists", func(r *current.Result) {
			r.Interfaces, r.IPs, r.Routes = []*current.Interface{}, []*current.IPConfig{}, []*types.Route{}
		}},
		{"route fields", func(r *current.Result) {
			r.Routes = append(r.Routes, &types.Route{Dst: cidr("192.0.2.0/24"), MTU: 1400, AdvMSS: 1360, Priority: 100, Table: ptr(0), Scope: ptr(253)},
				&types.Route{Dst: cidr("198.51.100.0/24"), Table: ptr(-1), Priority: 1<<53 + 1, MTU: 1 << 62})
		}},
		{"interface fields", func(r *current.Result) {
			r.Interfaces = append(r.Interfaces, &current.Interface{Name: "", SocketPath: "/run/vhost.sock", PciID: "0000:00:1f.6", Mtu: -1})
		}},
		{"strings to escape", func(r *current.Result) {
			r.Interfaces[2].Sandbox = "/run/netns/a&b<c>\"d\\e\n\t\x01\x7f é \u2028 \xff\xfe end"
			r.DNS.Search = []string{"<script>", "ünïcödé", "\xc3", ""}
		}},
		{"odd addresses", func(r *current.Result) {
			r.IPs[0].Address = net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.IPMask{255, 0, 255, 0}}
			r.IPs[1].Address = net.IPNet{}
			r.Routes[0].GW = net.ParseIP("::ffff:10.0.0.1")
		}},
		{"nil elements", func(r *current.Result) { r.Interfaces = append(r.Interfaces, nil) }},
		{"bad gateway", func(r *current.Result) { r.IPs[0].Gateway = net.IP{1, 2, 3} }},
	}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		for _, c := range cases {
			r := bridge()
			r.CNIVersion = v
			c.edit(r)
			compare(t, v+" "+c.name, r)
		}
	}
}

// TestAppendMatchesLibraryRandom compares many generated results.
func TestAppendMatchesLibraryRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "eth0", "a<b", "é", "\x00", "\xff", "/run/netns/x", "02:42:ac:11:00:02"}
	pick := func() string { return strs[rng.IntN(len(strs))] }
	ips := []net.IP{nil, net.ParseIP("10.0.0.1").To4(), net.ParseIP("10.0.0.1"), net.ParseIP("fe80::1")}
	nets := []net.IPNet{cidr("10.0.0.2/24"), cidr("fd00::2/64"), cidr("0.0.0.0/0"), {}}
	num := func() int { return []int{0, 1, -1, 1500, 1 << 40}[rng.IntN(5)] }
	optInt := func() *int {
		if rng.IntN(2) == 0 {
			return nil
		}
		return ptr(num())
	}
	for i := 0; i < 2000; i++ {
		r := &current.Result{CNIVersion: []string{"1.0.0", "1.1.0", ""}[rng.IntN(3)]}
		for n := rng.IntN(4); n > 0; n-- {
			r.Interfaces = append(r.Interfaces, &current.Interface{Name: pick(), Mac: pick(), Mtu: num(), Sandbox: pick(), SocketPath: pick(), PciID: pick()})
		}
		for n := rng.IntN(3); n > 0; n-- {
			r.IPs = append(r.IPs, &current.IPConfig{Interface: optInt(), Address: nets[rng.IntN(len(nets))], Gateway: ips[rng.IntN(len(ips))]})
		}
		for n := rng.IntN(3); n > 0; n-- {
			r.Routes = append(r.Routes, &types.Route{Dst: nets[rng.IntN(len(nets))], GW: ips[rng.IntN(len(ips))], MTU: num(), AdvMSS: num(), Priority: num(), Table: optInt(), Scope: optInt()})
		}
		if rng.IntN(2) == 0 {
			r.DNS = types.DNS{Domain: pick()}
			for n := rng.IntN(3); n > 0; n-- {
				r.DNS.Nameservers = append(r.DNS.Nameservers, pick())
				r.DNS.Search = append(r.DNS.Search, pick())
				r.DNS.Options = append(r.DNS.Options, pick())
			}
		}
		compare(t, "generated", r)
		if t.Failed() {
			return
		}
	}
}

// FuzzAppend compares Append with the library on results built from fuzzed strings.
func FuzzAppend(f *testing.F) {
	f.Add("eth0", "/run/netns/x", "dns.moor", 1500, 2)
	f.Add("a<&>\"\\", "\xff\x00", "", -1, 0)
	f.Fuzz(func(t *testing.T, name, sandbox, domain string, mtu, idx int) {
		r := &current.Result{CNIVersion: "1.0.0",
			Interfaces: []*current.Interface{{Name: name, Mac: sandbox, Mtu: mtu, Sandbox: sandbox}},
			IPs:        []*current.IPConfig{{Interface: &idx, Address: cidr("10.0.0.2/24")}},
			Routes:     []*types.Route{{Dst: cidr("0.0.0.0/0"), MTU: mtu, Table: &idx}},
			DNS:        types.DNS{Domain: domain, Search: []string{name}},
		}
		want, err := library(t, r)
		got, ok := Append(nil, r)
		if err == nil && (!ok || !bytes.Equal(got, want)) {
			t.Fatalf("differs\n got: %s\nwant: %s", got, want)
		}
	})
}

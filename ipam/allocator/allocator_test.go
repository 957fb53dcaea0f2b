package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/memory"
	"github.com/moornet/moor/ipam/store/storetest"
	"github.com/moornet/moor/plugins/codes"
)

var ctx = context.Background()

// parse builds a config for network net1 with the given ipam section; %s in ipam is
// replaced by a fresh data directory.
func parse(t testing.TB, ipam string) *config.Config {
	t.Helper()
	if strings.Contains(ipam, "%s") {
		ipam = fmt.Sprintf(ipam, t.TempDir())
	}
	cfg, err := config.Parse([]byte(`{"cniVersion":"1.1.0","name":"net1","ipam":` + ipam + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// onLocal returns an allocator on the local (bbolt) store the config names.
func onLocal(t testing.TB, cfg *config.Config) (*allocator.Allocator, store.Store) {
	t.Helper()
	st, err := allocator.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return allocator.New(cfg, st), st
}

func key(id string) store.Key { return store.Key{ContainerID: id, IfName: "eth0"} }

func add(t testing.TB, a *allocator.Allocator, r allocator.Request) *types100.Result {
	t.Helper()
	res, err := a.Allocate(ctx, r)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", r.Key, err)
	}
	return res
}

// ips renders a result's ips as "addr gw addr gw".
func ips(res *types100.Result) string {
	var s []string
	for _, ip := range res.IPs {
		s = append(s, ip.Address.String()+" gw "+ip.Gateway.String())
	}
	return strings.Join(s, ", ")
}

func refused(t *testing.T, err error, code uint) {
	t.Helper()
	if err == nil || storetest.CodeOf(err) != code {
		t.Fatalf("error %v (code %d), want code %d", err, storetest.CodeOf(err), code)
	}
}

func TestDualStack(t *testing.T) {
	cfg := parse(t, `{"dataDir":"%s","ranges":[[{"subnet":"10.88.0.0/16"}],[{"subnet":"fd00:88::/64","gateway":"fd00:88::fe"}]],
		"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}`)
	a, st := onLocal(t, cfg)
	res := add(t, a, allocator.Request{Key: key("c1"), Netns: "/run/netns/c1", ContainerName: "web"})
	if got, want := ips(res), "10.88.0.2/16 gw 10.88.0.1, fd00:88::1/64 gw fd00:88::fe"; got != want {
		t.Fatalf("ips: %s, want %s", got, want)
	}
	if len(res.Routes) != 2 || res.Routes[1].Dst.String() != "::/0" || res.Interfaces != nil || res.CNIVersion != "1.1.0" {
		t.Fatalf("result: %+v", res)
	}
	att, err := st.Get(ctx, key("c1"))
	if err != nil || att.Netns != "/run/netns/c1" || att.ContainerName != "web" || att.Created.IsZero() {
		t.Fatalf("recorded attachment: %+v, %v", att, err)
	}
	if err := a.Check(ctx, key("c1"), res); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestIdempotentAdd(t *testing.T) {
	a, _ := onLocal(t, parse(t, `{"dataDir":"%s","subnet":"10.0.0.0/24"}`))
	first := add(t, a, allocator.Request{Key: key("c1")})
	again := add(t, a, allocator.Request{Key: key("c1"), RequestedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.50/32")}})
	if ips(first) != ips(again) {
		t.Fatalf("second ADD: %s, first: %s", ips(again), ips(first))
	}
	if got := ips(add(t, a, allocator.Request{Key: key("c2")})); got != "10.0.0.3/24 gw 10.0.0.1" {
		t.Fatalf("next key: %s", got)
	}
}

func TestStaticAddressAskedTwice(t *testing.T) {
	// Static and dynamic in one config: the static address is reserved in the pool.
	cfg := parse(t, `{"dataDir":"%s","ranges":[[{"subnet":"10.0.0.0/29"}]],"addresses":[{"address":"10.0.0.3/29","gateway":"10.0.0.1"}]}`)
	a, st := onLocal(t, cfg)
	if got := ips(add(t, a, allocator.Request{Key: key("first")})); got != "10.0.0.2/29 gw 10.0.0.1, 10.0.0.3/29 gw 10.0.0.1" {
		t.Fatalf("first: %s", got)
	}
	_, err := a.Allocate(ctx, allocator.Request{Key: key("second")})
	refused(t, err, codes.AddressInUse)
	if !strings.Contains(err.Error(), "10.0.0.3 is already held by first/eth0") {
		t.Fatalf("message: %v", err)
	}
	if _, err := st.Get(ctx, key("second")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused ADD reserved something: %v", err)
	}
	if err := a.Check(ctx, key("first"), nil); err != nil {
		t.Fatalf("first affected: %v", err)
	}
	// The dynamic address the refused ADD would have taken (.4) is still free.
	only := allocator.New(parse(t, `{"subnet":"10.0.0.0/29"}`), st)
	if got := ips(add(t, only, allocator.Request{Key: key("third")})); got != "10.0.0.4/29 gw 10.0.0.1" {
		t.Fatalf("third: %s", got)
	}
}

func TestRequestedAddresses(t *testing.T) {
	cfg := parse(t, `{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.100"}],[{"subnet":"fd00::/64"}]]}`)
	a := allocator.New(cfg, memory.New())
	req := allocator.Request{Key: key("c1"), RequestedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::77/128"), netip.MustParsePrefix("10.0.0.150/24")}}
	if got := ips(add(t, a, req)); got != "10.0.0.150/24 gw 10.0.0.1, fd00::77/64 gw fd00::1" {
		t.Fatalf("requested: %s", got)
	}
	for _, tc := range []struct {
		addr string
		code uint
		msg  string
	}{
		{"10.0.0.50", codes.AddressOutOfRange, "requested address 10.0.0.50 lies outside every range (10.0.0.0/24 (10.0.0.100-10.0.0.254); fd00::/64)"},
		{"192.168.1.1", codes.AddressOutOfRange, "outside every range"},
		{"10.0.0.150", codes.AddressInUse, "10.0.0.150 is already held by c1/eth0"},
	} {
		r := allocator.Request{Key: key("c2"), RequestedIPs: []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr(tc.addr), 32)}}
		_, err := a.Allocate(ctx, r)
		refused(t, err, tc.code)
		if !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("%s: message %q lacks %q", tc.addr, err, tc.msg)
		}
	}
	two := allocator.Request{Key: key("c3"), RequestedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.101/32"), netip.MustParsePrefix("10.0.0.102/32")}}
	_, err := a.Allocate(ctx, two)
	refused(t, err, codes.InvalidNetworkConfig)
	// Nothing changed: the next dynamic allocation is the range's first address.
	if got := ips(add(t, a, allocator.Request{Key: key("c4")})); got != "10.0.0.100/24 gw 10.0.0.1, fd00::2/64 gw fd00::1" {
		t.Fatalf("after refusals: %s", got)
	}
}

func TestStaticOnlyWithRuntimeAddresses(t *testing.T) {
	cfg := parse(t, `{"type":"static","addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"}],"dns":{"nameservers":["10.10.0.1"]}}`)
	a := allocator.New(cfg, memory.New())
	if got := ips(add(t, a, allocator.Request{Key: key("c1")})); got != "10.10.0.5/24 gw 10.10.0.1" {
		t.Fatalf("configured: %s", got)
	}
	// Runtime addresses replace the configured ones; a bare address in a configured
	// subnet takes its length and gateway; CNI_ARGS GATEWAY sets the gateway by subnet.
	req := allocator.Request{Key: key("c2"), RequestedIPs: []netip.Prefix{
		netip.MustParsePrefix("10.10.0.6/32"), netip.MustParsePrefix("192.168.5.5/16"), netip.MustParsePrefix("fd00::5/128")},
		Gateways: []netip.Addr{netip.MustParseAddr("192.168.0.1")}}
	res := add(t, a, req)
	if got := ips(res); got != "10.10.0.6/24 gw 10.10.0.1, 192.168.5.5/16 gw 192.168.0.1, fd00::5/128 gw <nil>" {
		t.Fatalf("runtime: %s", got)
	}
	if res.DNS.Nameservers[0] != "10.10.0.1" {
		t.Fatalf("dns: %+v", res.DNS)
	}
	empty := allocator.New(parse(t, `{"type":"static"}`), memory.New())
	_, err := empty.Allocate(ctx, allocator.Request{Key: key("c1")})
	refused(t, err, codes.InvalidNetworkConfig)
}

func TestExhaustion(t *testing.T) {
	a, st := onLocal(t, parse(t, `{"dataDir":"%s","subnet":"10.0.0.0/29"}`))
	for i := 0; i < 5; i++ {
		add(t, a, allocator.Request{Key: key(fmt.Sprint("c", i))})
	}
	_, err := a.Allocate(ctx, allocator.Request{Key: key("c5")})
	refused(t, err, codes.PoolExhausted)
	if err.Error() != "pool 10.0.0.0/29: 5 of 5 addresses in use" {
		t.Fatalf("message: %q", err)
	}
	if list, _ := st.List(ctx); len(list) != 5 {
		t.Fatalf("%d attachments after the refusal, want 5", len(list))
	}
}

// Network, broadcast and gateway addresses are never handed out, even inside an
// explicit range, and do not count in the pool's size.
func TestNeverHandsOutNetworkBroadcastGateway(t *testing.T) {
	cfg := parse(t, `{"ranges":[[{"subnet":"10.0.0.0/30","rangeStart":"10.0.0.0","rangeEnd":"10.0.0.3","gateway":"10.0.0.2"}],
		[{"subnet":"fd00::/126","rangeStart":"fd00::","rangeEnd":"fd00::3","gateway":"fd00::"}]]}`)
	a := allocator.New(cfg, memory.New())
	if got := ips(add(t, a, allocator.Request{Key: key("c1")})); got != "10.0.0.1/30 gw 10.0.0.2, fd00::1/126 gw fd00::" {
		t.Fatalf("first: %s", got)
	}
	_, err := a.Allocate(ctx, allocator.Request{Key: key("c2")})
	refused(t, err, codes.PoolExhausted)
	if err.Error() != "pool 10.0.0.0/30 (10.0.0.0-10.0.0.3): 1 of 1 addresses in use" {
		t.Fatalf("message: %q", err)
	}
	_, err = a.Allocate(ctx, allocator.Request{Key: key("c3"), RequestedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.3/32")}})
	refused(t, err, codes.AddressOutOfRange)
	if !strings.Contains(err.Error(), "requested address 10.0.0.3 is the gateway, network or broadcast address of 10.0.0.0/30") {
		t.Fatalf("message: %q", err)
	}
}

func TestReleaseGCAndCheck(t *testing.T) {
	a, st := onLocal(t, parse(t, `{"dataDir":"%s","subnet":"10.0.0.0/24"}`))
	results := map[string]*types100.Result{}
	for _, id := range []string{"live1", "stale1", "live2", "stale2"} {
		results[id] = add(t, a, allocator.Request{Key: key(id)})
	}
	valid := allocator.ValidKeys([]types.GCAttachment{{ContainerID: "live1", IfName: "eth0"}, {ContainerID: "live2", IfName: "eth0"}})
	gone, err := a.GC(ctx, valid)
	if err != nil || len(gone) != 2 || gone[0].Key != key("stale1") || gone[1].Key != key("stale2") {
		t.Fatalf("GC: %+v, %v", gone, err)
	}
	var ce *allocator.CheckError
	if err := a.Check(ctx, key("stale1"), results["stale1"]); !errors.As(err, &ce) || ce.CNICode() != codes.CheckFailed {
		t.Fatalf("Check of a collected attachment: %v", err)
	}
	if err := a.Check(ctx, key("live1"), results["live2"]); !errors.As(err, &ce) ||
		!strings.Contains(err.Error(), "address 10.0.0.4/24 of the result is not reserved for it (it holds 10.0.0.2/24)") {
		t.Fatalf("Check against another attachment's result: %v", err)
	}
	freed, err := a.Release(ctx, key("live1"))
	if err != nil || len(freed) != 1 || freed[0].String() != "10.0.0.2/24" {
		t.Fatalf("Release: %v, %v", freed, err)
	}
	if freed, err := a.Release(ctx, key("live1")); err != nil || freed != nil {
		t.Fatalf("second Release: %v, %v", freed, err)
	}
	if list, _ := st.List(ctx); len(list) != 1 || list[0].Key != key("live2") {
		t.Fatalf("left: %+v", list)
	}
}

func TestResolvConfAndStaticDNS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	content := "# comment\nnameserver 192.0.2.53\nnameserver 2001:db8::53\ndomain corp.example\nsearch a.example b.example\noptions ndots:2 edns0\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, `{"subnet":"10.0.0.0/24","resolvConf":"`+path+`","dns":{"domain":"override.example"}}`)
	res := add(t, allocator.New(cfg, memory.New()), allocator.Request{Key: key("c1")})
	got := fmt.Sprintf("%v %s %v %v", res.DNS.Nameservers, res.DNS.Domain, res.DNS.Search, res.DNS.Options)
	if want := "[192.0.2.53 2001:db8::53] override.example [a.example b.example] [ndots:2 edns0]"; got != want {
		t.Fatalf("dns: %s, want %s", got, want)
	}
	st := memory.New()
	bad := parse(t, `{"subnet":"10.0.0.0/24","resolvConf":"/nonexistent/resolv.conf"}`)
	_, err := allocator.New(bad, st).Allocate(ctx, allocator.Request{Key: key("c1")})
	refused(t, err, codes.InvalidNetworkConfig)
	if list, _ := st.List(ctx); len(list) != 0 {
		t.Fatalf("a bad resolvConf reserved %v", list)
	}
}

func TestStatus(t *testing.T) {
	a, _ := onLocal(t, parse(t, `{"dataDir":"%s","subnet":"10.0.0.0/24"}`))
	if err := a.Status(ctx); err != nil {
		t.Fatalf("Status: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	broken, _ := onLocal(t, parse(t, `{"dataDir":"`+file+`/ipam","subnet":"10.0.0.0/24"}`))
	if err := broken.Status(ctx); err == nil {
		t.Fatal("Status with an unusable dataDir succeeded")
	}
}

func TestOpenStorePaths(t *testing.T) {
	cfg := parse(t, `{"dataDir":"/var/lib/x","subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["127.0.0.1:2379"],"prefix":"/p/"}}`)
	if got := allocator.StorePrefix(cfg); got != "/p/net1/" {
		t.Fatalf("prefix %s", got)
	}
	cfg.Store.Type = config.StoreLocal
	if got := allocator.StorePath(cfg); got != "/var/lib/x/net1.db" {
		t.Fatalf("path %s", got)
	}
	bad := parse(t, `{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["127.0.0.1:2379"],"tls":{"caFile":"/nonexistent/ca.pem"}}}`)
	if _, err := allocator.OpenStore(bad); storetest.CodeOf(err) != codes.InvalidNetworkConfig || !strings.HasPrefix(err.Error(), `ipam.store.tls "/nonexistent/ca.pem": `) {
		t.Fatalf("OpenStore with a missing CA file: %v", err)
	}
}

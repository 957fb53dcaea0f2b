package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/plugins/codes"
)

func conf(ipam string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"moor-bridge","ipam":` + ipam + `}`)
}

func mustParse(t *testing.T, raw []byte) *config.Config {
	t.Helper()
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func ranges(cfg *config.Config) string {
	var sets []string
	for _, set := range cfg.Ranges {
		var rs []string
		for _, r := range set {
			rs = append(rs, fmt.Sprintf("%s %s-%s gw %s", r.Subnet, r.RangeStart, r.RangeEnd, r.Gateway))
		}
		sets = append(sets, "["+strings.Join(rs, "; ")+"]")
	}
	return strings.Join(sets, " ")
}

func TestHostLocalDefaults(t *testing.T) {
	cfg := mustParse(t, conf(`{"type":"moor-ipam","ranges":[[{"subnet":"10.1.0.0/16"},{"subnet":"10.2.0.0/24","rangeStart":"10.2.0.10","rangeEnd":"10.2.0.20","gateway":"10.2.0.254"}],[{"subnet":"fd00:1::/64"}]]}`))
	want := "[10.1.0.0/16 10.1.0.1-10.1.255.254 gw 10.1.0.1; 10.2.0.0/24 10.2.0.10-10.2.0.20 gw 10.2.0.254] " +
		"[fd00:1::/64 fd00:1::1-fd00:1::ffff:ffff:ffff:ffff gw fd00:1::1]"
	if got := ranges(cfg); got != want {
		t.Fatalf("ranges:\n got %s\nwant %s", got, want)
	}
	if cfg.Name != "net1" || cfg.CNIVersion != "1.1.0" || cfg.Type != "moor-ipam" {
		t.Fatalf("name/version/type: %q %q %q", cfg.Name, cfg.CNIVersion, cfg.Type)
	}
	if cfg.DataDir != config.DefaultDataDir || cfg.Store.Type != config.StoreLocal || cfg.Store.LockTimeout != config.DefaultLockTimeout {
		t.Fatalf("store defaults: %q %+v", cfg.DataDir, cfg.Store)
	}
}

func TestLegacyRangeComesFirst(t *testing.T) {
	cfg := mustParse(t, conf(`{"subnet":"10.9.0.0/24","gateway":"10.9.0.254","rangeEnd":"10.9.0.100","ranges":[[{"subnet":"fd00::/120"}]]}`))
	want := "[10.9.0.0/24 10.9.0.1-10.9.0.100 gw 10.9.0.254] [fd00::/120 fd00::1-fd00::ff gw fd00::1]"
	if got := ranges(cfg); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestIPRangesCapabilityReplacesRanges(t *testing.T) {
	raw := []byte(`{"name":"net1","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}]]},
		"runtimeConfig":{"ipRanges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.100"}],[{"subnet":"fd00::/64"}]]}}`)
	cfg := mustParse(t, raw)
	want := "[10.0.0.0/24 10.0.0.100-10.0.0.254 gw 10.0.0.1] [fd00::/64 fd00::1-fd00::ffff:ffff:ffff:ffff gw fd00::1]"
	if got := ranges(cfg); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	_, err := config.Parse([]byte(`{"name":"n","ipam":{},"runtimeConfig":{"ipRanges":[[{"subnet":"10.0.0.0/33"}]]}}`))
	if err == nil || !strings.HasPrefix(err.Error(), `runtimeConfig.ipRanges[0][0].subnet "10.0.0.0/33"`) {
		t.Fatalf("ipRanges error does not name its field: %v", err)
	}
}

func TestStaticFields(t *testing.T) {
	cfg := mustParse(t, conf(`{"type":"static","addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"},{"address":"3ffe:ffff:0::5/64"}],
		"routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.10.0.254","mtu":1400,"table":100}],
		"dns":{"nameservers":["10.10.0.1"],"domain":"example.com","search":["example.com"],"options":["ndots:2"]}}`))
	if len(cfg.Ranges) != 0 || len(cfg.Addresses) != 2 {
		t.Fatalf("ranges %v addresses %v", cfg.Ranges, cfg.Addresses)
	}
	if a := cfg.Addresses[0]; a.Address.String() != "10.10.0.5/24" || a.Gateway.String() != "10.10.0.1" {
		t.Fatalf("address 0: %+v", a)
	}
	if a := cfg.Addresses[1]; a.Address.String() != "3ffe:ffff::5/64" || a.Gateway.IsValid() {
		t.Fatalf("address 1: %+v", a)
	}
	if r := cfg.Routes[1]; r.Dst.String() != "192.168.0.0/16" || r.GW.String() != "10.10.0.254" || r.MTU != 1400 || *r.Table != 100 {
		t.Fatalf("route: %v", r)
	}
	if cfg.Routes[0].GW != nil || cfg.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Fatalf("default route: %v", cfg.Routes[0])
	}
	if cfg.DNS.Domain != "example.com" || cfg.DNS.Options[0] != "ndots:2" {
		t.Fatalf("dns: %+v", cfg.DNS)
	}
}

func TestEtcdStore(t *testing.T) {
	cfg := mustParse(t, conf(`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["https://10.1.1.1:2379"],
		"tls":{"certFile":"/c.pem","keyFile":"/k.pem","caFile":"/ca.pem"},"dialTimeout":"1s","requestTimeout":3}}`))
	sc := cfg.Store
	if sc.Type != config.StoreEtcd || sc.Prefix != config.DefaultStorePrefix || sc.Etcd.TLS.CAFile != "/ca.pem" ||
		sc.Etcd.DialTimeout != time.Second || sc.Etcd.RequestTimeout != 3*time.Second || sc.Etcd.Field != "ipam.store" {
		t.Fatalf("etcd store: %+v", sc)
	}
}

func TestErrorsNameFieldAndValue(t *testing.T) {
	for _, tc := range []struct {
		ipam string
		want string
		code uint
	}{
		{`{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.0.0/33"}]]}`, `ipam.ranges[0][1].subnet "10.0.0.0/33": not a CIDR subnet`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.5/24"}]]}`, `ipam.ranges[0][0].subnet "10.0.0.5/24": host bits set; the network address is 10.0.0.0/24`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/31"}]]}`, `ipam.ranges[0][0].subnet "10.0.0.0/31": too small to allocate from (at most /30)`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{}]]}`, `ipam.ranges[0][0].subnet: missing`, codes.InvalidNetworkConfig},
		{`{"ranges":[[]]}`, `ipam.ranges[0]: empty range set`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}]]}`, `ipam.ranges[0][0].rangeStart "10.0.1.1": not in subnet 10.0.0.0/24`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"fd00::1"}]]}`, `ipam.ranges[0][0].rangeEnd "fd00::1": not of the family of subnet 10.0.0.0/24`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.50","rangeEnd":"10.0.0.40"}]]}`, `ipam.ranges[0][0].rangeEnd "10.0.0.40": before rangeStart 10.0.0.50`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"ten"}]]}`, `ipam.ranges[0][0].gateway "ten": not an IP address`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"192.0.2.1"}]]}`, `ipam.ranges[0][0].gateway "192.0.2.1": not in subnet 10.0.0.0/24`, codes.InvalidNetworkConfig},
		{`{"subnet":"0.0.0.0/0"}`, `ipam.subnet "0.0.0.0/0": is the whole address space: a network's subnet must be a part of it`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"::/0"}]]}`, `ipam.ranges[0][0].subnet "::/0": is the whole address space: a network's subnet must be a part of it`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}`, `ipam.ranges[0][1].subnet "fd00::/64": mixes IPv4 and IPv6 in one range set (10.0.0.0/24)`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}`, `ipam.ranges[1]: range 10.0.0.0/25 (10.0.0.1-10.0.0.126) overlaps range 10.0.0.0/24 (10.0.0.1-10.0.0.254) of ipam.ranges[0]`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.100"},{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.100"}]]}`, `ipam.ranges[0][1]: range 10.0.0.0/24 (10.0.0.100-10.0.0.254) overlaps range 10.0.0.0/24 (10.0.0.1-10.0.0.100) of ipam.ranges[0][0]`, codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","ranges":[[{"subnet":"10.0.0.0/16"}]]}`, `ipam.ranges[0]: range 10.0.0.0/16 (10.0.0.1-10.0.255.254) overlaps range 10.0.0.0/24 (10.0.0.1-10.0.0.254) of ipam`, codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","gateway":"x"}`, `ipam.gateway "x": not an IP address`, codes.InvalidNetworkConfig},
		{`{"ranges":[[{"subnet":5}]]}`, `ipam.ranges.subnet: wrong type: JSON number where string is expected`, codes.InvalidNetworkConfig},
		{`{"addresses":[{"address":"10.0.0.5"}]}`, `ipam.addresses[0].address "10.0.0.5": not an address in CIDR notation (e.g. 10.0.0.5/24)`, codes.InvalidNetworkConfig},
		{`{"addresses":[{"address":"10.0.0.5/24"},{"address":"10.0.0.5/16"}]}`, `ipam.addresses[1].address "10.0.0.5/16": same address as ipam.addresses[0]`, codes.InvalidNetworkConfig},
		{`{"addresses":[{"address":"10.0.0.5/24","gateway":"fd00::1"}]}`, `ipam.addresses[0].gateway "fd00::1": not of the family of 10.0.0.5/24`, codes.InvalidNetworkConfig},
		{`{"routes":[{"dst":"default"}]}`, `ipam.routes[0].dst "default": not a CIDR destination`, codes.InvalidNetworkConfig},
		{`{"routes":[{"dst":"::/0","gw":"10.0.0.1"}]}`, `ipam.routes[0].gw "10.0.0.1": not of the family of dst ::/0`, codes.InvalidNetworkConfig},
		{`{"dataDir":"relative/dir"}`, `ipam.dataDir "relative/dir": must be an absolute path`, codes.InvalidNetworkConfig},
		{`{"store":{"type":"consul"}}`, `ipam.store.type "consul": must be "local" or "etcd"`, codes.InvalidNetworkConfig},
		{`{"store":{"type":"etcd"}}`, `ipam.store.endpoints: required: the etcd endpoints, e.g. ["https://10.0.0.1:2379"]`, codes.InvalidNetworkConfig},
		{`{"store":{"endpoints":["http://127.0.0.1:2379"]}}`, `ipam.store.endpoints: applies to store type "etcd" only, not "local"`, codes.UnsupportedField},
		{`{"store":{"type":"etcd","endpoints":["e:1"],"lockTimeout":"1s"}}`, `ipam.store.lockTimeout: applies to store type "local" only, not "etcd"`, codes.UnsupportedField},
		{`{"store":{"type":"etcd","endpoints":["e:1"],"tls":{"certFile":"/c"}}}`, `ipam.store.tls "/c": certFile and keyFile go together`, codes.InvalidNetworkConfig},
		{`{"store":{"lockTimeout":"soon"}}`, `ipam.store.lockTimeout "soon": not a duration (e.g. "2s" or a number of seconds)`, codes.InvalidNetworkConfig},
		{`{"store":{"lockTimeout":"-1s"}}`, `ipam.store.lockTimeout "-1s": must be positive`, codes.InvalidNetworkConfig},
	} {
		_, err := config.Parse(conf(tc.ipam))
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: error %v is not a *config.Error", tc.ipam, err)
			continue
		}
		if err.Error() != tc.want || ce.CNICode() != tc.code {
			t.Errorf("%s:\n got %v (code %d)\nwant %s (code %d)", tc.ipam, err, ce.CNICode(), tc.want, tc.code)
		}
	}
}

func TestTopLevelErrors(t *testing.T) {
	for _, tc := range []struct {
		raw, want string
		code      uint
	}{
		{`{"name":"net1"`, `config: not valid JSON: unexpected end of JSON input`, codes.DecodingFailure},
		{`{"name":"net1"}`, `ipam: missing`, codes.InvalidNetworkConfig},
		{`{"name":"../etc","ipam":{}}`, `name "../etc": must start with a letter or digit and contain only letters, digits, '_', '.' and '-'`, codes.InvalidNetworkConfig},
		{`{"name":"n","ipam":[]}`, `ipam: wrong type: JSON array where object is expected`, codes.InvalidNetworkConfig},
	} {
		_, err := config.Parse([]byte(tc.raw))
		var ce *config.Error
		if !errors.As(err, &ce) || err.Error() != tc.want || ce.CNICode() != tc.code {
			t.Errorf("%s: got %v, want %s (code %d)", tc.raw, err, tc.want, tc.code)
		}
	}
}

package config_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/plugins/codes"
)

// FuzzParse feeds whole plugin configs to config.Parse: a refusal is a *config.Error that
// names a field and carries code 2, 6 or 7, never a panic; what parses is canonical (masked
// subnets, ranges inside their subnet and in order, one family per set, no overlap, an
// absolute dataDir, positive timeouts).
func FuzzParse(f *testing.F) {
	for _, ipam := range []string{
		`{"type":"moor-ipam","subnet":"10.0.0.0/24"}`,
		`{"ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.10","rangeEnd":"10.0.0.99","gateway":"10.0.0.1"}],[{"subnet":"fd00::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00::1"}]}`,
		`{"addresses":[{"address":"10.0.0.5/24","gateway":"10.0.0.1"}],"dns":{"nameservers":["10.0.0.53"]}}`,
		`{"subnet":"::ffff:10.0.0.0/120"}`,
		`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["https://e:2379"],"tls":{"certFile":"/c","keyFile":"/k"},"dialTimeout":2,"requestTimeout":"5s"}}`,
		`{"subnet":"10.0.0.0/24","store":{"lockTimeout":"250ms"},"dataDir":"/tmp/x"}`,
		`{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}`,
	} {
		f.Add([]byte(`{"cniVersion":"1.1.0","name":"net1","ipam":` + ipam + `}`))
	}
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/16"}]]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cfg, err := config.Parse(raw)
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is a %T, not a *config.Error", err, err)
			}
			switch ce.CNICode() {
			case codes.UnsupportedField, codes.DecodingFailure, codes.InvalidNetworkConfig:
			default:
				t.Fatalf("error %v has code %d", err, ce.CNICode())
			}
			if ce.Field == "" {
				t.Fatalf("error %v names no field", err)
			}
			return
		}
		checkCanonical(t, cfg)
	})
}

func checkCanonical(t *testing.T, cfg *config.Config) {
	t.Helper()
	if !filepath.IsAbs(cfg.DataDir) {
		t.Fatalf("dataDir %q parsed", cfg.DataDir)
	}
	var all []config.Range
	for i, set := range cfg.Ranges {
		if len(set) == 0 {
			t.Fatalf("empty range set %d parsed", i)
		}
		for _, r := range set {
			s := r.Subnet
			if s != s.Masked() || !s.Contains(r.RangeStart) || !s.Contains(r.RangeEnd) || r.RangeEnd.Less(r.RangeStart) {
				t.Fatalf("range %+v is not canonical", r)
			}
			if r.Gateway.IsValid() && r.Gateway.BitLen() != s.Addr().BitLen() {
				t.Fatalf("range %+v has a gateway of the other family", r)
			}
			if s.Addr().BitLen() != set[0].Subnet.Addr().BitLen() {
				t.Fatalf("range set %d mixes families", i)
			}
			for _, o := range all {
				if o.RangeStart.BitLen() == r.RangeStart.BitLen() && !o.RangeEnd.Less(r.RangeStart) && !r.RangeEnd.Less(o.RangeStart) {
					t.Fatalf("ranges %+v and %+v overlap", o, r)
				}
			}
			all = append(all, r)
		}
	}
	st := cfg.Store
	if st.Type != config.StoreLocal && st.Type != config.StoreEtcd || st.LockTimeout <= 0 ||
		st.Type == config.StoreEtcd && (st.Etcd.DialTimeout <= 0 || st.Etcd.RequestTimeout <= 0) {
		t.Fatalf("store %+v parsed", st)
	}
}

// A config near the plugins' 4 MiB stdin bound with 130,000 ranges parses, and an
// overlap hidden at its end is found and named. (Overlaps used to be found by comparing
// every pair: minutes of CPU for such a config.)
func TestManyRangesParse(t *testing.T) {
	const n = 130000
	var b strings.Builder
	b.WriteString(`{"cniVersion":"1.1.0","name":"n","ipam":{"ranges":[`)
	for i := range n {
		fmt.Fprintf(&b, `[{"subnet":"10.%d.%d.%d/30"}],`, i>>14, i>>6&0xff, i&0x3f<<2)
	}
	clean := strings.TrimSuffix(b.String(), ",") + `]}}`
	cfg, err := config.Parse([]byte(clean))
	if err != nil || len(cfg.Ranges) != n {
		t.Fatalf("%d distinct ranges: %v", n, err)
	}
	withOverlap := b.String() + `[{"subnet":"10.1.2.0/24"}]]}}`
	_, err = config.Parse([]byte(withOverlap))
	want := fmt.Sprintf("ipam.ranges[%d]: range 10.1.2.0/24 (10.1.2.1-10.1.2.254) overlaps range", n)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("overlap at the end: got %v, want %s...", err, want)
	}
}

// Every ipam field with a wrong type or value is refused with code 7 (2 for a field of
// the other store type) naming the field; TestErrorsNameFieldAndValue checks the exact
// messages of the range, address and route checks.
func TestIPAMFieldsRefused(t *testing.T) {
	for _, tc := range []struct {
		ipam, field string
		code        uint
	}{
		{`{"type":5,"subnet":"10.0.0.0/24"}`, "ipam.type", codes.InvalidNetworkConfig},
		{`{"subnet":5}`, "ipam.subnet", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.300"}`, "ipam.rangeStart", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","rangeEnd":["x"]}`, "ipam.rangeEnd", codes.InvalidNetworkConfig},
		{`{"ranges":"10.0.0.0/24"}`, "ipam.ranges", codes.InvalidNetworkConfig},
		{`{"ranges":[{"subnet":"10.0.0.0/24"}]}`, "ipam.ranges", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","routes":"default"}`, "ipam.routes", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"x"}]}`, "ipam.routes[0].gw", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","mtu":"big"}]}`, "ipam.routes", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","resolvConf":5}`, "ipam.resolvConf", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","dataDir":5}`, "ipam.dataDir", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","dataDir":"../x"}`, "ipam.dataDir", codes.InvalidNetworkConfig},
		{`{"addresses":{"address":"10.0.0.5/24"}}`, "ipam.addresses", codes.InvalidNetworkConfig},
		{`{"addresses":[{"address":"10.0.0.5/24","gateway":"x"}]}`, "ipam.addresses[0].gateway", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","dns":"10.0.0.53"}`, "ipam.dns", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","dns":{"nameservers":"10.0.0.53"}}`, "ipam.dns", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":[]}`, "ipam.store", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":"e:1"}}`, "ipam.store.endpoints", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":[""]}}`, "ipam.store.endpoints[0]", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["e:1"],"prefix":5}}`, "ipam.store.prefix", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["e:1"],"tls":"on"}}`, "ipam.store.tls", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["e:1"],"dialTimeout":"x"}}`, "ipam.store.dialTimeout", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"type":"etcd","endpoints":["e:1"],"requestTimeout":true}}`, "ipam.store.requestTimeout", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"lockTimeout":0}}`, "ipam.store.lockTimeout", codes.InvalidNetworkConfig},
		{`{"subnet":"10.0.0.0/24","store":{"prefix":"/x"}}`, "ipam.store.prefix", codes.UnsupportedField},
	} {
		_, err := config.Parse(conf(tc.ipam))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.CNICode() != tc.code || !strings.HasPrefix(ce.Field, tc.field) {
			t.Errorf("%s: got %v, want code %d naming %s", tc.ipam, err, tc.code, tc.field)
		}
	}
}

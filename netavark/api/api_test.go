package api

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestNetworkKeepsUnknownFields(t *testing.T) {
	in := `{"name":"web","id":"1","driver":"moor-bridge","created":"2024-05-01T10:00:00Z","labels":{"a":"b"},
		"subnets":[{"subnet":"10.89.0.0/24","gateway":"10.89.0.1","lease_range":{"start_ip":"10.89.0.10"}}],
		"ipv6_enabled":false,"internal":true,"dns_enabled":true,"options":{"mtu":"1400"},"ipam_options":{"driver":"host-local"}}`
	var n Network
	if err := json.Unmarshal([]byte(in), &n); err != nil {
		t.Fatal(err)
	}
	if n.Name != "web" || !n.Internal || n.Subnets[0].LeaseRange.StartIP != "10.89.0.10" || n.Options["mtu"] != "1400" {
		t.Errorf("decoded %+v", n)
	}
	if len(n.Extra) != 2 {
		t.Errorf("extra %v, want created and labels", n.Extra)
	}
	out, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	_ = json.Unmarshal([]byte(in), &a)
	_ = json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the network:\n%s\n%s", in, out)
	}
	// The required fields are written even when false or empty, as netavark's decoder needs.
	out, _ = json.Marshal(Network{Name: "n", ID: "1", Driver: "moor-bridge"})
	var req map[string]any
	_ = json.Unmarshal(out, &req)
	for _, k := range []string{"name", "id", "driver", "ipv6_enabled", "internal", "dns_enabled"} {
		if _, ok := req[k]; !ok {
			t.Errorf("%s missing from %s", k, out)
		}
	}
}

func TestInfoFlattensExtra(t *testing.T) {
	out, err := json.Marshal(Info{Version: "1.2", APIVersion: Version, Extra: map[string]string{"driver": "x", "version": "no"}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	_ = json.Unmarshal(out, &m)
	if !reflect.DeepEqual(m, map[string]string{"version": "1.2", "api_version": "1.0.0", "driver": "x"}) {
		t.Errorf("info %s", out)
	}
}

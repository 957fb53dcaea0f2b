package shim

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

func TestShimNamesAndMetrics(t *testing.T) {
	if n := Name(strings.Repeat("x", 128)); len(n) != 15 || !strings.HasPrefix(n, namePrefix) {
		t.Errorf("shim name %q: want 15 characters starting with %s", n, namePrefix)
	}
	if Name("a") == Name("b") {
		t.Error("two networks share a shim name")
	}
	if userMetric("n", "c1", "eth0") == userMetric("n", "c2", "eth0") || userMetric("n", "c1", "eth0") == userMetric("n", "c1", "eth1") {
		t.Error("two attachments share a metric")
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if userMetric("n", id, "eth0") <= 0 {
			t.Errorf("metric of %s is not positive", id)
		}
	}
}

// The shim's reservation carries none of the container's requests, and GC keeps it while
// the shim stays.
func TestShimCallsForIPAM(t *testing.T) {
	call := &plugins.Call{
		ContainerID: "c1", IfName: "eth0", Args: "IP=10.0.0.5", Netns: "/run/netns/c1", NetworkName: "net1",
		StdinData: plugintest.Config("1.1.0", "net1", "moor-macvlan", map[string]any{
			"runtimeConfig":     map[string]any{"ips": []string{"10.0.0.5/24"}, "mac": "02:00:00:00:00:01"},
			"args":              map[string]any{"cni": map[string]any{"ips": []string{"10.0.0.6"}}},
			"ipam":              map[string]any{"type": "moor-ipam", "subnet": "10.0.0.0/24"},
			validAttachmentsKey: []types.GCAttachment{{ContainerID: "c9", IfName: "eth0"}},
		}),
	}
	sc, err := ipamCall(call)
	if err != nil {
		t.Fatal(err)
	}
	if sc.ContainerID != "moor-shim-net1" || sc.IfName != IfName || sc.Args != "" || sc.Netns != hostNetnsPath {
		t.Errorf("shim call %+v", sc)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(sc.StdinData, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range requestKeys {
		if _, ok := raw[k]; ok {
			t.Errorf("the shim's config keeps %s", k)
		}
	}
	if _, ok := raw["ipam"]; !ok {
		t.Error("the shim's config lost ipam")
	}
	gc, err := KeepReservation(call)
	if err != nil {
		t.Fatal(err)
	}
	var nc plugins.NetConf
	if err := json.Unmarshal(gc.StdinData, &nc); err != nil {
		t.Fatal(err)
	}
	want := []types.GCAttachment{{ContainerID: "c9", IfName: "eth0"}, {ContainerID: "moor-shim-net1", IfName: IfName}}
	if len(nc.ValidAttachments) != 2 || nc.ValidAttachments[0] != want[0] || nc.ValidAttachments[1] != want[1] {
		t.Errorf("valid attachments %+v, want %+v", nc.ValidAttachments, want)
	}
}

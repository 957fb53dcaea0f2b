package cnirt

import (
	"reflect"
	"strings"
	"testing"
)

func TestResolveContainer(t *testing.T) {
	for _, c := range []struct {
		netns, id, name      string
		wantPath, wantID, wN string
	}{
		{"web1", "", "", "/run/netns/web1", "web1", "web1"},
		{"/run/netns/web1", "", "app", "/run/netns/web1", "web1", "app"},
		{"/var/run/netns/web1/", "", "", "/var/run/netns/web1", "web1", "web1"},
		{"web1", "c0ffee", "", "/run/netns/web1", "c0ffee", "web1"},
	} {
		got, err := ResolveContainer(c.netns, c.id, c.name)
		if err != nil || got.Netns != c.wantPath || got.ID != c.wantID || got.Name != c.wN {
			t.Errorf("ResolveContainer(%q, %q, %q) = %+v, %v", c.netns, c.id, c.name, got, err)
		}
	}
	a, _ := ResolveContainer("/proc/42/ns/net", "", "")
	b, _ := ResolveContainer("/proc/42/ns/net", "", "")
	other, _ := ResolveContainer("/proc/43/ns/net", "", "")
	if !strings.HasPrefix(a.ID, derivedIDPfx) || len(a.ID) != len(derivedIDPfx)+derivedIDLen || a.ID != b.ID || a.ID == other.ID {
		t.Errorf("derived IDs %q %q %q", a.ID, b.ID, other.ID)
	}
	if _, err := ResolveContainer("web1", "-bad", ""); err == nil {
		t.Error("a bad --container-id was accepted")
	}
}

func TestParsePublish(t *testing.T) {
	for in, want := range map[string]map[string]any{
		"8080:80":              {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
		"5353:53/udp":          {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
		"127.0.0.1:8443:443":   {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "127.0.0.1"},
		"[::1]:8443:443/sctp":  {"hostPort": 8443, "containerPort": 443, "protocol": "sctp", "hostIP": "::1"},
		"10.0.0.1:1:65535/tcp": {"hostPort": 1, "containerPort": 65535, "protocol": "tcp", "hostIP": "10.0.0.1"},
	} {
		got, err := ParsePublish(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParsePublish(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"80", "a:80", "8080:0", "8080:80/icmp", "70000:80"} {
		if _, err := ParsePublish(bad); err == nil {
			t.Errorf("ParsePublish(%q) accepted", bad)
		}
	}
}

func TestRuntimeConf(t *testing.T) {
	c, _ := ResolveContainer("web1", "", "")
	rt, err := RuntimeConf(c, Attach{IPs: []string{"10.0.0.5"}, Aliases: []string{"db"}, Publish: []string{"8080:80"}, IPsCapability: true})
	if err != nil {
		t.Fatal(err)
	}
	if rt.IfName != DefaultIfName || rt.ContainerID != "web1" || rt.NetNS != "/run/netns/web1" {
		t.Errorf("runtime conf %+v", rt)
	}
	if !reflect.DeepEqual(rt.Args, [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web1"}}) {
		t.Errorf("args %v", rt.Args)
	}
	if !reflect.DeepEqual(rt.CapabilityArgs["ips"], []string{"10.0.0.5"}) || !reflect.DeepEqual(rt.CapabilityArgs["aliases"], []string{"db"}) {
		t.Errorf("capability args %v", rt.CapabilityArgs)
	}
	rt, _ = RuntimeConf(c, Attach{IPs: []string{"10.0.0.5", "fd00::5"}})
	if rt.Args[len(rt.Args)-1] != [2]string{"IP", "10.0.0.5,fd00::5"} || rt.CapabilityArgs["ips"] != nil {
		t.Errorf("without the ips capability: args %v caps %v", rt.Args, rt.CapabilityArgs)
	}
	if _, err := RuntimeConf(c, Attach{Publish: []string{"x"}}); err == nil {
		t.Error("a bad --publish was accepted")
	}
}

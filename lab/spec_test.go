package lab

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleLabFile(t *testing.T) {
	s, err := Load(filepath.Join("..", "examples", "lab-3hosts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "lab-3hosts" || len(s.Hosts) != 3 || len(s.Networks) != 1 || !s.Networks[0].DNS || s.Etcd.Members != 1 {
		t.Fatalf("example lab: %+v", s)
	}
	for _, h := range s.Hosts {
		if len(h.Containers) != 2 {
			t.Fatalf("host %s has %d containers, want 2", h.Name, len(h.Containers))
		}
	}
}

// TestEncryptedLabFile: the encrypted example parses, and each host's conflist carries
// the encryption and a state directory of its own; another encryption value is refused
// naming the field.
func TestEncryptedLabFile(t *testing.T) {
	s, err := Load(filepath.Join("..", "examples", "lab-encrypted.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Networks) != 1 || s.Networks[0].Encryption != "wireguard" || len(s.Hosts) != 3 {
		t.Fatalf("encrypted example: %+v", s)
	}
	l := &Lab{State: &State{Spec: *s}}
	h := &Host{Name: "h1", HostID: "x-h1", Dir: "/lab/h1"}
	list := string(l.conflist(h, s.Networks[0]))
	if !strings.Contains(list, `"encryption": "wireguard"`) || !strings.Contains(list, `"stateDir": "/lab/h1/state"`) {
		t.Fatalf("conflist of an encrypted network:\n%s", list)
	}
	if plain := string(l.conflist(h, NetworkSpec{Name: "p", Subnet: "10.9.0.0/16"})); strings.Contains(plain, "encryption") {
		t.Fatalf("a clear network's conflist names encryption:\n%s", plain)
	}
	_, err = Parse([]byte("networks: [{name: a, subnet: 10.1.0.0/16, encryption: ipsec}]\nhosts: [{name: h1}]\n"), "x")
	var se *SpecError
	if !errors.As(err, &se) || se.Field != "networks[0].encryption" {
		t.Fatalf("encryption ipsec: %v", err)
	}
}

func TestParseDefaultsAndForms(t *testing.T) {
	s, err := Parse([]byte(`
networks: [{name: a, subnet: 10.1.0.0/16}, {name: b, subnet: 10.2.0.0/16}]
hosts:
  - name: h1
    containers: [x, {name: y, networks: [b]}]
`), "from-file")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "from-file" || s.Underlay != DefaultUnderlay || s.Networks[0].VNI != 1 || s.Networks[1].VNI != 2 ||
		s.Networks[0].HostSubnetLen != 24 || s.Networks[0].LeaseTTL != DefaultLeaseTTL || s.Agent.Resync != DefaultResync {
		t.Fatalf("defaults: %+v", s)
	}
	if got := s.NetworksOf(s.Hosts[0].Containers[0]); len(got) != 2 {
		t.Fatalf("a bare container name attaches to %d networks, want every one", len(got))
	}
	if got := s.NetworksOf(s.Hosts[0].Containers[1]); len(got) != 1 || got[0].Name != "b" {
		t.Fatalf("container y attaches to %+v, want b only", got)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct{ yaml, field string }{
		{"name: Bad_Name\nnetworks: [{name: a, subnet: 10.1.0.0/16}]\nhosts: [{name: h}]", "name"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]\nhosts: [{name: h}]\nunderlay: 10.0.0.0/30", "underlay"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]\nhosts: [{name: h}]\netcd: {members: 2}", "etcd.members"},
		{"hosts: [{name: h}]", "networks"},
		{"networks: [{name: a, subnet: nope}]\nhosts: [{name: h}]", "networks[0].subnet"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}, {name: a, subnet: 10.2.0.0/16}]\nhosts: [{name: h}]", "networks[1].name"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]", "hosts"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]\nhosts: [{name: h}, {name: h}]", "hosts[1].name"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]\nhosts: [{name: h, containers: [x, x]}]", "hosts[0].containers[1].name"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]\nhosts: [{name: h, containers: [{name: x, networks: [z]}]}]", "hosts[0].containers[0].networks"},
		{"networks: [{name: a, subnet: 10.1.0.0/16}]\nunderlay: 10.0.0.0/28\nhosts: [{name: a1}, {name: a2}, {name: a3}, {name: a4}, {name: a5}, {name: a6}, {name: a7}, {name: a8}, {name: a9}, {name: b1}, {name: b2}]", "hosts"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml), "lab")
		var se *SpecError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("%q: err %v, want a *SpecError on %s", tc.yaml, err, tc.field)
		}
	}
}

func TestAddressPlan(t *testing.T) {
	u := netip.MustParsePrefix("172.31.0.0/24")
	if a := underlayAddr(u, 0); a.String() != "172.31.0.1" {
		t.Errorf("first host %s", a)
	}
	if a := topAddr(u, 1); a.String() != "172.31.0.254" {
		t.Errorf("router %s", a)
	}
	if hostCapacity(u) != 250 || underlayAddr(u, 249).Compare(topAddr(u, 4)) >= 0 {
		t.Errorf("capacity %d: the last host %s collides with the reserved top", hostCapacity(u), underlayAddr(u, 249))
	}
	first, again, other := hostMAC("l", "h1"), hostMAC("l", "h1"), hostMAC("l", "h2")
	if first.String() != again.String() || first.String() == other.String() {
		t.Error("host MACs are not stable per host and distinct between hosts")
	}
}

func TestCommandTree(t *testing.T) {
	cmd := Command()
	var names []string
	for _, c := range cmd.Commands() {
		names = append(names, c.Name())
	}
	if strings.Join(names, ",") != "down,status,up" || cmd.PersistentFlags().Lookup("cni-bin-dir") == nil {
		t.Fatalf("lab command tree: %v", names)
	}
}

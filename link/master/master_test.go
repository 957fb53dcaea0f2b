package master

import (
	"strings"
	"testing"
)

func TestVLANUsers(t *testing.T) {
	if u := VLANUser("n", "c1", "eth0"); !strings.HasPrefix(u, VLANUsersPrefix("n")) || strings.HasPrefix(u, VLANUsersPrefix("m")) {
		t.Errorf("vlan user %q does not carry its network's prefix", u)
	}
	if a, b := VLANUser("n", "c1", "eth0"), VLANUser("n", "c1", "eth1"); a == b || len(a) != len(vlanUserPrefix)+networkHashLen+1+attachmentHashLen {
		t.Errorf("vlan users %q and %q", a, b)
	}
}

func TestParseVLAN(t *testing.T) {
	for _, tc := range []struct {
		in     string
		parent string
		id     int
		bad    bool
	}{{"eth0.10", "eth0", 10, false}, {"eth0", "", 0, false}, {"bond0.1.4094", "bond0.1", 4094, false}, {"eth0.0", "", 0, true}, {"eth0.4095", "", 0, true}} {
		v, err := ParseVLAN(tc.in)
		switch {
		case tc.bad && err == nil:
			t.Errorf("%s: no error", tc.in)
		case !tc.bad && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case !tc.bad && tc.parent == "" && v != nil:
			t.Errorf("%s: %+v, want no VLAN", tc.in, v)
		case tc.parent != "" && (v == nil || v.Parent != tc.parent || v.ID != tc.id):
			t.Errorf("%s: %+v, want %s id %d", tc.in, v, tc.parent, tc.id)
		}
	}
}

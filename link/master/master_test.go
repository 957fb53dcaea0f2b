package master

import (
	"regexp"
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

// TestSplitVLANMatchesPattern: the hand-written split accepts exactly what the regular
// expression ^(.+)\.([0-9]+)$ it replaces matched, with the same parts.
func TestSplitVLANMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^(.+)\.([0-9]+)$`)
	for _, s := range []string{"", ".", "..", ".1", "eth0.", "eth0.1", "eth0.01", "eth0.1a", "eth0.a1", "a.b.2",
		"a..2", "a.2.", "é.3", "a\n.4", "a.5\n", "\n.6", "x.99999999999999999999", "-.7", "eth0 .8", "eth0.+9", "eth0.٣"} {
		parent, digits, ok := splitVLAN(s)
		m := re.FindStringSubmatch(s)
		if ok != (m != nil) || ok && (parent != m[1] || digits != m[2]) {
			t.Errorf("splitVLAN(%q) = %q, %q, %v; the pattern gives %q", s, parent, digits, ok, m)
		}
	}
}

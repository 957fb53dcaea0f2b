package main

import (
	"fmt"
	"testing"
)

// The entries a config gives a container's port: the access VLAN as PVID untagged, the
// trunk's VLANs tagged, the access VLAN once when the trunk repeats it.
func TestPortVlans(t *testing.T) {
	id := func(v int) *int { return &v }
	cases := []struct {
		vlan  int
		trunk []*vlanTrunk
		want  string
	}{
		{0, nil, "[]"},
		{10, nil, "[VLAN 10 PVID untagged]"},
		{0, []*vlanTrunk{{ID: id(5)}, {MinID: id(7), MaxID: id(8)}}, "[VLAN 5 tagged VLAN 7 tagged VLAN 8 tagged]"},
		{7, []*vlanTrunk{{MinID: id(6), MaxID: id(7)}}, "[VLAN 7 PVID untagged VLAN 6 tagged]"},
	}
	for _, tc := range cases {
		c := &conf{Vlan: tc.vlan, VlanTrunk: tc.trunk}
		ids, err := expandTrunk(tc.trunk)
		if err != nil {
			t.Fatal(err)
		}
		c.trunkIDs = ids
		if got := fmt.Sprint(c.portVlans()); got != tc.want {
			t.Errorf("vlan %d trunk %v: %s, want %s", tc.vlan, ids, got, tc.want)
		}
		if c.vlanFiltering() != (tc.want != "[]") {
			t.Errorf("vlan %d trunk %v: vlanFiltering %v", tc.vlan, ids, c.vlanFiltering())
		}
	}
}

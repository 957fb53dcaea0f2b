package lease

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"
)

// oldLease is the lease as agents before PlaneData decode it.
type oldLease struct {
	HostID   string       `json:"hostID"`
	Subnet   netip.Prefix `json:"subnet"`
	Underlay netip.Addr   `json:"underlay"`
	MAC      string       `json:"vtepMAC"`
	Created  time.Time    `json:"created"`
}

// TestPlaneDataBothWays: a lease without plane data (written by an older agent) decodes
// as the default plane; a lease with it keeps every field for a newer reader, and an
// older reader decodes it with its own fields intact.
func TestPlaneDataBothWays(t *testing.T) {
	old := `{"hostID":"h1","subnet":"10.240.3.0/24","underlay":"192.0.2.1","vtepMAC":"02:00:00:00:00:03","created":"2026-01-01T00:00:00Z"}`
	l, err := decodeLease([]byte(old), 5)
	if err != nil {
		t.Fatalf("a lease without plane data: %v", err)
	}
	if l.Plane != nil || l.PlaneType() != DefaultPlane || l.VTEPMAC.String() != "02:00:00:00:00:03" || l.Revision != 5 {
		t.Fatalf("decoded %+v (plane %q)", l, l.PlaneType())
	}

	pd := &PlaneData{Type: "wireguard", Version: 1, PublicKey: "cHVibGljIGtleSBvZiBoMiwgMzIgYnl0ZXMgbG9uZyE=", Endpoint: netip.MustParseAddrPort("192.0.2.2:51820")}
	n := Lease{HostID: "h2", Subnet: netip.MustParsePrefix("10.240.4.0/24"), Underlay: netip.MustParseAddr("192.0.2.2"),
		VTEPMAC: net.HardwareAddr{2, 0, 0, 0, 0, 4}, Created: time.Now().UTC(), Plane: pd}
	data := encodeLease(n)
	back, err := decodeLease([]byte(data), 6)
	if err != nil {
		t.Fatal(err)
	}
	if back.Plane == nil || *back.Plane != *pd || back.PlaneType() != "wireguard" {
		t.Fatalf("plane data after a round trip: %+v, want %+v", back.Plane, pd)
	}
	var o oldLease
	if err := json.Unmarshal([]byte(data), &o); err != nil {
		t.Fatalf("an older agent cannot read a new lease: %v", err)
	}
	if o.HostID != "h2" || o.Subnet != n.Subnet || o.Underlay != n.Underlay || o.MAC != "02:00:00:00:00:04" {
		t.Fatalf("an older agent reads %+v", o)
	}

	// Without an endpoint or key (the VXLAN plane), neither is written.
	vx := encodeLease(Lease{HostID: "h3", Subnet: n.Subnet, Underlay: n.Underlay, VTEPMAC: n.VTEPMAC, Plane: &PlaneData{Type: "vxlan", Version: 1}})
	var raw map[string]map[string]any
	_ = json.Unmarshal([]byte(vx), &raw)
	if len(raw["plane"]) != 2 {
		t.Fatalf("vxlan plane data %v, want only type and version", raw["plane"])
	}

	for _, bad := range []string{`{"type":"","version":1}`, `{"type":"wireguard","version":0}`} {
		doc := old[:len(old)-1] + `,"plane":` + bad + `}`
		if _, err := decodeLease([]byte(doc), 1); err == nil {
			t.Errorf("plane %s decoded", bad)
		}
	}
}

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/netnsid"
)

// A store written by another life of this namespace's identity (same <dev>-<ino>, another
// cookie) is emptied before the new namespace uses it; one of the same life, one of another
// identity (paths shared on purpose) and one with an unreadable marker keep their records.
func TestClaimStore(t *testing.T) {
	id := netnsid.ID{Dev: 4, Ino: 4026532208}
	const cookie = 4242
	tests := []struct {
		name       string
		marker     *string // nil: no marker file
		wantWiped  bool
		wantMarker string
	}{
		{"no marker yet", nil, false, "4-4026532208 4242\n"},
		{"same life", ptr("4-4026532208 4242\n"), false, "4-4026532208 4242\n"},
		{"another life of the identity", ptr("4-4026532208 17\n"), true, "4-4026532208 4242\n"},
		{"another namespace's store", ptr("4-4026532999 17\n"), false, "4-4026532999 17\n"},
		{"unreadable marker", ptr("garbage"), false, "4-4026532208 4242\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "dns")
			st, err := records.NewLocal(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			_, sn, _ := net.ParseCIDR("10.9.0.0/24")
			if err := st.PutNetwork(ctx, records.Network{Name: "old", Gateways: []net.IP{net.ParseIP("10.9.0.1")}, Subnets: []*net.IPNet{sn}}); err != nil {
				t.Fatal(err)
			}
			if err := st.Put(ctx, records.Record{Network: "old", ContainerID: "c1", IfName: "eth0", Names: []string{"stale"}, IPs: []net.IP{net.ParseIP("10.9.0.2")}}); err != nil {
				t.Fatal(err)
			}
			marker := dir + markerSuffix
			if tt.marker != nil {
				if err := os.WriteFile(marker, []byte(*tt.marker), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			wiped, err := claim(ctx, marker, id, cookie, st, time.Second)
			if err != nil || wiped != tt.wantWiped {
				t.Fatalf("claim = %v, %v; want wiped %v", wiped, err, tt.wantWiped)
			}
			recs, _ := st.List(ctx, "old")
			nets, _ := st.Networks(ctx)
			if got := fmt.Sprint(len(nets), len(recs)); tt.wantWiped && got != "0 0" || !tt.wantWiped && got != "1 1" {
				t.Errorf("networks and records after claim: %s", got)
			}
			data, _ := os.ReadFile(marker)
			if string(data) != tt.wantMarker {
				t.Errorf("marker %q, want %q", data, tt.wantMarker)
			}
			if fi, err := os.Stat(marker); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("marker mode: %v %v", fi.Mode(), err)
			}
		})
	}
}

func ptr(s string) *string { return &s }

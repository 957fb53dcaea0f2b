package lease_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

// TestSpecPlane: the network's stored config records its data plane; a host of another
// plane is refused (code 7, naming the field and both values) and claims nothing; a
// config stored before the field existed takes the plane of the first host that joins.
func TestSpecPlane(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	withPlane := func(p string) lease.Spec { s := spec("10.9.0.0/16", 24); s.Plane = p; return s }
	for _, tc := range []struct {
		name, first, joiner string
	}{
		{"clear network, encrypted host", "vxlan", "wireguard"},
		{"encrypted network, clear host", "wireguard", "vxlan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			network := strings.ReplaceAll(tc.name, " ", "")
			network = strings.ReplaceAll(network, ",", "-")
			acquire(t, registry(t, cli, network, withPlane(tc.first)), "h1", "192.0.2.1")
			r := registry(t, cli, network, withPlane(tc.joiner))
			_, _, err := r.Acquire(context.Background(), lease.Request{HostID: "h2", Underlay: netip.MustParseAddr("192.0.2.2"), TTL: time.Minute})
			var mismatch *lease.MismatchError
			if !errors.As(err, &mismatch) || mismatch.CNICode() != codes.InvalidNetworkConfig || mismatch.Field != "plane" ||
				mismatch.Stored != tc.first || mismatch.Config != tc.joiner {
				t.Fatalf("a %s host joining a %s network: %v, want *MismatchError on plane (code 7)", tc.joiner, tc.first, err)
			}
			for _, want := range []string{"plane", tc.first, tc.joiner, `"encryption"`} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err, want)
				}
			}
			ls, _, err := r.List(context.Background())
			if err != nil || len(ls) != 1 || ls[0].HostID != "h1" {
				t.Fatalf("leases after the refusal: %+v, %v; want h1's only", ls, err)
			}
		})
	}

	t.Run("config stored before the field", func(t *testing.T) {
		old := spec("10.9.0.0/16", 24) // no plane: as written by older code
		data, _ := json.Marshal(old)
		if _, err := cli.Put(context.Background(), "/test/overlay/legacy/config", string(data)); err != nil {
			t.Fatal(err)
		}
		acquire(t, registry(t, cli, "legacy", withPlane("wireguard")), "h1", "192.0.2.1")
		resp, err := cli.Get(context.Background(), "/test/overlay/legacy/config")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatal(err)
		}
		var stored lease.Spec
		if err := json.Unmarshal(resp.Kvs[0].Value, &stored); err != nil || stored.Plane != "wireguard" || stored.Range != old.Range {
			t.Fatalf("stored config %s, %v; want the first joiner's plane recorded", resp.Kvs[0].Value, err)
		}
		r := registry(t, cli, "legacy", withPlane("vxlan"))
		if _, _, err := r.Acquire(context.Background(), lease.Request{HostID: "h2", Underlay: netip.MustParseAddr("192.0.2.2"), TTL: time.Minute}); err == nil {
			t.Fatal("a vxlan host joined the network its first host recorded as wireguard")
		}
	})
}

// TestPublish: a rotation's fast path writes the new plane data in one transaction on the
// lease's revision; a lease changed since is *StaleError (code 11) and left as it is.
func TestPublish(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	r := registry(t, srv.Client(t), "pub", spec("10.9.0.0/16", 24))
	l, _ := acquire(t, r, "h1", "192.0.2.1")
	pd := &lease.PlaneData{Type: "wireguard", Version: 1, PublicKey: "new", Endpoint: netip.MustParseAddrPort("192.0.2.1:51820")}
	nl, err := r.Publish(context.Background(), l, pd)
	if err != nil || nl.Revision <= l.Revision {
		t.Fatalf("Publish: %+v, %v", nl, err)
	}
	ls, _, err := r.List(context.Background())
	if err != nil || len(ls) != 1 || ls[0].Plane == nil || *ls[0].Plane != *pd || ls[0].Subnet != l.Subnet {
		t.Fatalf("stored after Publish: %+v, %v", ls, err)
	}
	_, err = r.Publish(context.Background(), l, &lease.PlaneData{Type: "wireguard", Version: 1, PublicKey: "stale"})
	var stale *lease.StaleError
	if !errors.As(err, &stale) || stale.CNICode() != codes.TryAgainLater {
		t.Fatalf("Publish on an old revision: %v, want *StaleError", err)
	}
	if ls, _, _ := r.List(context.Background()); ls[0].Plane.PublicKey != "new" {
		t.Fatalf("a stale Publish wrote %+v", ls[0].Plane)
	}
}

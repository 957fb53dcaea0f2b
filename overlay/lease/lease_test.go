package lease_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
	"github.com/moornet/moor/plugins/etcdconf"
)

const testTTL = 2 * time.Second

func spec(rng string, hostLen int) lease.Spec {
	return lease.Spec{Range: netip.MustParsePrefix(rng), HostSubnetLen: hostLen, VNI: 7, Port: 4789}
}

func registry(t *testing.T, cli *clientv3.Client, network string, s lease.Spec) *lease.Registry {
	t.Helper()
	return lease.New(cli, lease.Options{Prefix: "/test/overlay", Network: network, Spec: s, Timeout: 3 * time.Second})
}

func acquire(t *testing.T, r *lease.Registry, host, underlay string) (lease.Lease, bool) {
	t.Helper()
	l, created, err := r.Acquire(context.Background(), lease.Request{HostID: host, Underlay: netip.MustParseAddr(underlay), TTL: time.Minute})
	if err != nil {
		t.Fatalf("Acquire(%s): %v", host, err)
	}
	return l, created
}

func TestAcquireIsStablePerHost(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	r := registry(t, srv.Client(t), "net1", spec("10.240.0.0/16", 24))
	a, created := acquire(t, r, "host-a", "192.0.2.1")
	if !created || a.Subnet != netip.MustParsePrefix("10.240.0.0/24") || a.Gateway() != netip.MustParseAddr("10.240.0.1") {
		t.Fatalf("first lease = %+v (created %v), want 10.240.0.0/24 created", a, created)
	}
	b, _ := acquire(t, r, "host-b", "192.0.2.2")
	if b.Subnet == a.Subnet {
		t.Fatalf("two hosts got %s", a.Subnet)
	}
	again, created := acquire(t, r, "host-a", "192.0.2.1")
	if created || again.Subnet != a.Subnet || again.VTEPMAC.String() != a.VTEPMAC.String() {
		t.Fatalf("re-acquire = %+v created %v, want %s %s unchanged", again, created, a.Subnet, a.VTEPMAC)
	}
	if a.VTEPMAC[0]&0x02 == 0 || a.VTEPMAC[0]&0x01 != 0 {
		t.Fatalf("VTEP MAC %s is not a locally administered unicast address", a.VTEPMAC)
	}
	// A new underlay address is written to the lease; the subnet stays.
	moved, _ := acquire(t, r, "host-a", "192.0.2.9")
	own, ok, err := r.Own(context.Background(), "host-a")
	if err != nil || !ok || own.Underlay != netip.MustParseAddr("192.0.2.9") || moved.Subnet != a.Subnet {
		t.Fatalf("after underlay change: own %+v ok %v err %v", own, ok, err)
	}
}

func TestConcurrentAcquireGivesDistinctSubnets(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	const hosts = 20
	var wg sync.WaitGroup
	got := make([]lease.Lease, hosts)
	errs := make([]error, hosts)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := registry(t, cli, "net1", spec("10.240.0.0/16", 24))
			got[i], _, errs[i] = r.Acquire(context.Background(), lease.Request{HostID: fmt.Sprintf("h%02d", i), Underlay: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i+1)), TTL: time.Minute})
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]string{}
	for i, l := range got {
		if errs[i] != nil {
			t.Fatalf("host %d: %v", i, errs[i])
		}
		if other, dup := seen[l.Subnet]; dup {
			t.Fatalf("%s leased to %s and %s", l.Subnet, other, l.HostID)
		}
		seen[l.Subnet] = l.HostID
	}
	leases, _, err := registry(t, cli, "net1", spec("10.240.0.0/16", 24)).List(context.Background())
	if err != nil || len(leases) != hosts {
		t.Fatalf("List = %d leases, %v; want %d", len(leases), err, hosts)
	}
}

func TestExhaustionAndMismatch(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	r := registry(t, cli, "small", spec("10.9.0.0/28", 30)) // 4 host subnets
	for i := range 4 {
		acquire(t, r, fmt.Sprintf("h%d", i), "192.0.2.1")
	}
	_, _, err := r.Acquire(context.Background(), lease.Request{HostID: "h4", Underlay: netip.MustParseAddr("192.0.2.5"), TTL: time.Minute})
	var noSubnet *lease.NoSubnetError
	if !errors.As(err, &noSubnet) || noSubnet.CNICode() != codes.OverlayNoSubnet {
		t.Fatalf("fifth host: err %v, want *NoSubnetError (code 109)", err)
	}
	other := registry(t, cli, "small", spec("10.9.0.0/28", 29))
	_, _, err = other.Acquire(context.Background(), lease.Request{HostID: "h9", Underlay: netip.MustParseAddr("192.0.2.9"), TTL: time.Minute})
	var mismatch *lease.MismatchError
	if !errors.As(err, &mismatch) || mismatch.Field != "hostSubnetLen" || mismatch.CNICode() != codes.InvalidNetworkConfig {
		t.Fatalf("different hostSubnetLen: err %v, want *MismatchError on hostSubnetLen", err)
	}
}

func TestReleaseFreesSubnet(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	r := registry(t, srv.Client(t), "net1", spec("10.240.0.0/16", 24))
	a, _ := acquire(t, r, "host-a", "192.0.2.1")
	if _, ok, err := r.Release(context.Background(), "host-a"); err != nil || !ok {
		t.Fatalf("Release: ok %v err %v", ok, err)
	}
	if _, ok, err := r.Release(context.Background(), "host-a"); err != nil || ok {
		t.Fatalf("second Release: ok %v err %v, want nothing released and no error", ok, err)
	}
	b, _ := acquire(t, r, "host-b", "192.0.2.2")
	if b.Subnet != a.Subnet {
		t.Fatalf("after release, host-b got %s, want the freed %s", b.Subnet, a.Subnet)
	}
}

// TestReclaimAfterSilence: a host whose heartbeat expires loses its lease to Reclaim, and
// gets the same subnet and MAC back when it returns while the subnet is still free.
func TestReclaimAfterSilence(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	r := registry(t, cli, "net1", spec("10.240.0.0/16", 24))
	ctx := context.Background()
	a, _, err := r.Acquire(ctx, lease.Request{HostID: "host-a", Underlay: netip.MustParseAddr("192.0.2.1"), TTL: testTTL})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := acquire(t, r, "host-b", "192.0.2.2")
	id, err := r.Beat(ctx, "host-b", time.Minute) // host-b's agent keeps beating
	if err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	if _, err := cli.KeepAlive(kctx, id); err != nil {
		t.Fatal(err)
	}
	events := r.Watch(ctx, 0)
	if got, _ := r.Reclaim(ctx); len(got) != 0 {
		t.Fatalf("Reclaim while alive took %+v", got)
	}
	waitEvent(t, events, lease.Silent, "host-a")
	got, err := r.Reclaim(ctx)
	if err != nil || len(got) != 1 || got[0].HostID != "host-a" {
		t.Fatalf("Reclaim = %+v, %v; want host-a's lease", got, err)
	}
	waitEvent(t, events, lease.Left, "host-a")
	leases, _, _ := r.List(ctx)
	if len(leases) != 1 || leases[0].HostID != b.HostID {
		t.Fatalf("leases after reclaim: %+v", leases)
	}
	back, created := acquire(t, r, "host-a", "192.0.2.1")
	if !created || back.Subnet != a.Subnet || back.VTEPMAC.String() != a.VTEPMAC.String() {
		t.Fatalf("host-a back: %+v, want subnet %s and MAC %s", back, a.Subnet, a.VTEPMAC)
	}
	waitEvent(t, events, lease.Joined, "host-a")
}

func waitEvent(t *testing.T, events <-chan lease.Event, kind lease.EventKind, host string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("watch closed while waiting for %v of %s", kind, host)
			}
			if e.Kind == lease.Lost {
				t.Fatalf("watch lost: %v", e.Err)
			}
			if e.Kind == kind && e.HostID == host {
				return
			}
		case <-deadline:
			t.Fatalf("no event %v for %s", kind, host)
		}
	}
}

func TestUnavailableIsTryAgain(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	srv.Stop()
	r := lease.New(cli, lease.Options{Prefix: "/test/overlay", Network: "net1", Spec: spec("10.240.0.0/16", 24), Timeout: time.Second})
	start := time.Now()
	_, _, err := r.Acquire(context.Background(), lease.Request{HostID: "h", Underlay: netip.MustParseAddr("192.0.2.1"), TTL: time.Minute})
	var un *lease.UnavailableError
	if !errors.As(err, &un) || un.CNICode() != codes.TryAgainLater {
		t.Fatalf("Acquire with etcd down: err %v, want *UnavailableError (code 11)", err)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Fatalf("Acquire took %s with a 1s timeout", elapsed) // a hang, not a timing assertion
	}
}

// TestTLSClient: the client options' certificate files reach an etcd that requires them.
func TestTLSClient(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{TLS: true})
	cli, err := etcdclient.New(etcdconf.Config{Endpoints: []string{srv.Endpoint}, TLS: etcdconf.TLS{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: srv.CAFile}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	acquire(t, registry(t, cli, "net1", spec("10.240.0.0/16", 24)), "host-a", "192.0.2.1")
	_, err = etcdclient.New(etcdconf.Config{Field: "store", Endpoints: []string{srv.Endpoint}, TLS: etcdconf.TLS{CAFile: "/nonexistent/ca.pem"}})
	if coded, ok := err.(codes.Coded); !ok || coded.CNICode() != codes.InvalidNetworkConfig || !strings.Contains(err.Error(), "store.tls") {
		t.Fatalf("a missing CA file: %v, want code 7 naming store.tls", err)
	}
}

// TestPlaneDataIsRefreshed: the host's plane data goes into its lease and a change (a
// rotated key) replaces it on the next Acquire, keeping the subnet.
func TestPlaneDataIsRefreshed(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	r := registry(t, srv.Client(t), "net1", spec("10.240.0.0/16", 24))
	ctx := context.Background()
	req := lease.Request{HostID: "host-a", Underlay: netip.MustParseAddr("192.0.2.1"), TTL: time.Minute,
		Plane: &lease.PlaneData{Type: "wireguard", Version: 1, PublicKey: "key-1"}}
	first, created, err := r.Acquire(ctx, req)
	if err != nil || !created {
		t.Fatalf("Acquire: created %v, %v", created, err)
	}
	req.Plane = &lease.PlaneData{Type: "wireguard", Version: 1, PublicKey: "key-2", Endpoint: netip.MustParseAddrPort("192.0.2.1:51820")}
	if _, created, err = r.Acquire(ctx, req); err != nil || created {
		t.Fatalf("second Acquire: created %v, %v", created, err)
	}
	own, ok, err := r.Own(ctx, "host-a")
	if err != nil || !ok {
		t.Fatalf("Own: %v %v", ok, err)
	}
	if own.Subnet != first.Subnet || own.Plane == nil || *own.Plane != *req.Plane {
		t.Fatalf("lease after rotation %+v plane %+v, want subnet %s and plane %+v", own, own.Plane, first.Subnet, req.Plane)
	}
}

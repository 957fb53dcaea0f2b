// Package recordstest is the contract every records.Store backend must meet, as one test
// suite that each backend's tests run against a fresh store (Local, and etcdrecords in etcd). It
// needs no privileges and touches nothing outside the store it is given.
package recordstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/codes"
)

// NewStore returns an empty store; the suite closes it.
type NewStore func(t *testing.T) records.Store

// testTimeout bounds each store call so a broken backend fails instead of hanging.
const testTimeout = 30 * time.Second

// Run runs the whole contract against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s records.Store)
	}{
		{"NetworkRoundTrip", testNetworkRoundTrip},
		{"PutNeedsNetwork", testPutNeedsNetwork},
		{"PutListDelete", testPutListDelete},
		{"InvalidInput", testInvalidInput},
		{"Normalise", testNormalise},
		{"DeleteMissing", testDeleteMissing},
		{"DeleteNetworkRemovesRecords", testDeleteNetwork},
		{"WatchSignalsChanges", testWatch},
		{"ConcurrentPutDelete", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return c
}

// Net returns a valid network definition for tests.
func Net(name string) records.Network {
	_, sn, _ := net.ParseCIDR("10.88.0.0/16")
	_, sn6, _ := net.ParseCIDR("fd00:88::/64")
	return records.Network{
		Name:     name,
		Domain:   "dns.moor",
		Gateways: []net.IP{net.ParseIP("10.88.0.1"), net.ParseIP("fd00:88::1")},
		Subnets:  []*net.IPNet{sn, sn6},
	}
}

// Rec returns a valid record for tests.
func Rec(network, id string, ip string, names ...string) records.Record {
	return records.Record{Network: network, ContainerID: id, IfName: "eth0", Names: names, IPs: []net.IP{net.ParseIP(ip)}}
}

func mustPutNetwork(t *testing.T, s records.Store, n records.Network) {
	t.Helper()
	if err := s.PutNetwork(ctx(t), n); err != nil {
		t.Fatalf("PutNetwork(%s): %v", n.Name, err)
	}
}

func mustPut(t *testing.T, s records.Store, r records.Record) {
	t.Helper()
	if err := s.Put(ctx(t), r); err != nil {
		t.Fatalf("Put(%s): %v", r.Key(), err)
	}
}

func keys(t *testing.T, s records.Store, network string) []string {
	t.Helper()
	rs, err := s.List(ctx(t), network)
	if err != nil {
		t.Fatalf("List(%q): %v", network, err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Network+"/"+r.ContainerID+"/"+r.IfName)
	}
	sort.Strings(out)
	return out
}

func testNetworkRoundTrip(t *testing.T, s records.Store) {
	n := Net("alpha")
	n.Internal = true
	n.Upstreams = []string{"192.0.2.53", "[2001:db8::53]:5353"}
	mustPutNetwork(t, s, n)
	mustPutNetwork(t, s, Net("beta"))
	ns, err := s.Networks(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 2 {
		t.Fatalf("Networks() = %d networks, want 2: %+v", len(ns), ns)
	}
	var got records.Network
	for _, x := range ns {
		if x.Name == "alpha" {
			got = x
		}
	}
	if got.Domain != "dns.moor" || !got.Internal || len(got.Gateways) != 2 || !got.Gateways[0].Equal(net.ParseIP("10.88.0.1")) ||
		len(got.Subnets) != 2 || got.Subnets[1].String() != "fd00:88::/64" {
		t.Fatalf("network read back differs: %+v", got)
	}
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:5353"}; !slices.Equal(got.Upstreams, want) {
		t.Fatalf("upstreams = %v, want %v", got.Upstreams, want)
	}
	// Replacing keeps one network.
	n.Domain = "other.test"
	mustPutNetwork(t, s, n)
	ns, _ = s.Networks(ctx(t))
	if len(ns) != 2 {
		t.Fatalf("after replace: %d networks, want 2", len(ns))
	}
}

func testPutNeedsNetwork(t *testing.T, s records.Store) {
	err := s.Put(ctx(t), Rec("nope", "c1", "10.88.0.2", "web"))
	var nf *records.NotFoundError
	if !errors.As(err, &nf) || nf.Network != "nope" {
		t.Fatalf("Put on missing network: err = %v, want *NotFoundError for %q", err, "nope")
	}
}

func testPutListDelete(t *testing.T, s records.Store) {
	mustPutNetwork(t, s, Net("a"))
	mustPutNetwork(t, s, Net("b"))
	mustPut(t, s, Rec("a", "c1", "10.88.0.2", "web"))
	mustPut(t, s, Rec("a", "c2", "10.88.0.3", "db"))
	mustPut(t, s, Rec("b", "c1", "10.88.0.4", "web"))
	r2 := Rec("a", "c1", "10.88.0.2", "web")
	r2.IfName = "eth1"
	mustPut(t, s, r2)
	if got, want := keys(t, s, "a"), []string{"a/c1/eth0", "a/c1/eth1", "a/c2/eth0"}; !slices.Equal(got, want) {
		t.Fatalf("List(a) = %v, want %v", got, want)
	}
	if got := keys(t, s, ""); len(got) != 4 {
		t.Fatalf("List(\"\") = %v, want 4 records", got)
	}
	// Replace updates in place.
	mustPut(t, s, Rec("a", "c2", "10.88.0.9", "db", "database"))
	rs, _ := s.List(ctx(t), "a")
	for _, r := range rs {
		if r.ContainerID == "c2" && (!r.IPs[0].Equal(net.ParseIP("10.88.0.9")) || !slices.Equal(r.Names, []string{"db", "database"})) {
			t.Fatalf("replaced record = %+v", r)
		}
	}
	if err := s.Delete(ctx(t), "a", "c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if got, want := keys(t, s, "a"), []string{"a/c1/eth1", "a/c2/eth0"}; !slices.Equal(got, want) {
		t.Fatalf("after Delete: List(a) = %v, want %v", got, want)
	}
}

func testInvalidInput(t *testing.T, s records.Store) {
	mustPutNetwork(t, s, Net("a"))
	bad := []struct {
		what string
		r    records.Record
	}{
		{"space in alias", Rec("a", "c1", "10.88.0.2", "my web")},
		{"space", Rec("a", "c1", "10.88.0.2", "my web")},
		{"leading hyphen", Rec("a", "c1", "10.88.0.2", "-web")},
		{"empty label", Rec("a", "c1", "10.88.0.2", "web..x")},
		{"long label", Rec("a", "c1", "10.88.0.2", fmt.Sprintf("%064d", 0))},
		{"no names", Rec("a", "c1", "10.88.0.2")},
		{"bad container id", Rec("a", "../c1", "10.88.0.2", "web")},
	}
	for _, b := range bad {
		err := s.Put(ctx(t), b.r)
		var coded codes.Coded
		if !errors.As(err, &coded) || coded.CNICode() != codes.InvalidNetworkConfig {
			t.Errorf("%s: Put err = %v, want a coded error with code %d", b.what, err, codes.InvalidNetworkConfig)
		}
	}
	if got := keys(t, s, "a"); len(got) != 0 {
		t.Fatalf("invalid records were stored: %v", got)
	}
	n := Net("bad/name")
	if err := s.PutNetwork(ctx(t), n); err == nil {
		t.Fatal("PutNetwork accepted a network name with a slash")
	}
}

func testNormalise(t *testing.T, s records.Store) {
	mustPutNetwork(t, s, Net("a"))
	r := Rec("a", "c1", "10.88.0.2", "Web", "web", "ALIAS.ns")
	r.IPs = append(r.IPs, net.ParseIP("::ffff:10.88.0.2"), net.ParseIP("fd00:88::2"))
	mustPut(t, s, r)
	rs, err := s.List(ctx(t), "a")
	if err != nil || len(rs) != 1 {
		t.Fatalf("List = %v, %v", rs, err)
	}
	if want := []string{"web", "alias.ns"}; !slices.Equal(rs[0].Names, want) {
		t.Fatalf("names = %v, want %v", rs[0].Names, want)
	}
	if len(rs[0].IPs) != 2 {
		t.Fatalf("ips = %v, want the duplicate v4-mapped address removed", rs[0].IPs)
	}
}

func testDeleteMissing(t *testing.T, s records.Store) {
	if err := s.Delete(ctx(t), "none", "c1", "eth0"); err != nil {
		t.Fatalf("Delete on missing network: %v", err)
	}
	mustPutNetwork(t, s, Net("a"))
	if err := s.Delete(ctx(t), "a", "c1", "eth0"); err != nil {
		t.Fatalf("Delete of missing record: %v", err)
	}
	if err := s.DeleteNetwork(ctx(t), "none"); err != nil {
		t.Fatalf("DeleteNetwork of missing network: %v", err)
	}
}

func testDeleteNetwork(t *testing.T, s records.Store) {
	mustPutNetwork(t, s, Net("a"))
	mustPutNetwork(t, s, Net("b"))
	mustPut(t, s, Rec("a", "c1", "10.88.0.2", "web"))
	mustPut(t, s, Rec("b", "c1", "10.88.0.2", "web"))
	if err := s.DeleteNetwork(ctx(t), "a"); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, s, ""); !slices.Equal(got, []string{"b/c1/eth0"}) {
		t.Fatalf("after DeleteNetwork(a): %v", got)
	}
	ns, _ := s.Networks(ctx(t))
	if len(ns) != 1 || ns[0].Name != "b" {
		t.Fatalf("networks after delete: %+v", ns)
	}
	// The network can be made again and used.
	mustPutNetwork(t, s, Net("a"))
	mustPut(t, s, Rec("a", "c3", "10.88.0.3", "web"))
}

func testWatch(t *testing.T, s records.Store) {
	wctx, cancel := context.WithCancel(ctx(t))
	ch, err := s.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	mustPutNetwork(t, s, Net("a"))
	mustPut(t, s, Rec("a", "c1", "10.88.0.2", "web"))
	seen := map[string]bool{}
	timeout := time.After(testTimeout)
	for !seen["a"] {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed early")
			}
			for _, n := range c.Networks {
				seen[n] = true
			}
			if c.All {
				seen["a"] = true
			}
		case <-timeout:
			t.Fatal("no change signalled for network a")
		}
	}
	cancel()
	for range ch { // must be closed after cancel
	}
}

// testConcurrent runs 50 writers, each putting and deleting its own records, and checks that
// exactly the records that should remain do: nothing lost, nothing leaked.
func testConcurrent(t *testing.T, s records.Store) {
	const writers = 50
	const perWriter = 4
	mustPutNetwork(t, s, Net("a"))
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter*2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				id := fmt.Sprintf("c%02d-%d", w, i)
				r := Rec("a", id, fmt.Sprintf("10.88.%d.%d", w, i+2), "web", id)
				if err := s.Put(ctx(t), r); err != nil {
					errs <- err
				}
				if i%2 == 1 { // odd ones are deleted again
					if err := s.Delete(ctx(t), "a", id, "eth0"); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var want []string
	for w := range writers {
		for i := 0; i < perWriter; i += 2 {
			want = append(want, fmt.Sprintf("a/c%02d-%d/eth0", w, i))
		}
	}
	sort.Strings(want)
	if got := keys(t, s, "a"); !slices.Equal(got, want) {
		t.Fatalf("after concurrent writers: %d records, want %d\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
}

package etcdrecords_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/records/etcdrecords"
	"github.com/moornet/moor/dns/records/recordstest"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

func newStore(t *testing.T, cli *clientv3.Client, prefix, host string) *etcdrecords.Store {
	t.Helper()
	s, err := etcdrecords.New(etcdrecords.Options{Client: cli, Prefix: prefix, Host: host, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEtcdContract(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	n := 0
	recordstest.Run(t, func(t *testing.T) records.Store {
		n++
		// A fresh prefix per subtest: an empty store each time.
		return newStore(t, cli, "/test/dns/"+string(rune('a'+n)), "host1")
	})
}

// TestCrossHost: records are shared, network definitions and ownership are per host.
func TestCrossHost(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	a, b := newStore(t, cli, "/x", "ha"), newStore(t, cli, "/x", "hb")
	t.Cleanup(func() { a.Close(); b.Close() })
	ctx := context.Background()
	netA, netB := recordstest.Net("ov"), recordstest.Net("ov")
	netB.Gateways = netB.Gateways[:1]
	if err := a.PutNetwork(ctx, netA); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, recordstest.Rec("ov", "cb", "10.88.1.2", "web-b")); err == nil {
		t.Fatal("host b wrote a record on a network it has not defined")
	}
	if err := b.PutNetwork(ctx, netB); err != nil {
		t.Fatal(err)
	}
	changes, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, recordstest.Rec("ov", "ca", "10.88.0.2", "web-a")); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-changes:
		if !c.All && !slices.Contains(c.Networks, "ov") {
			t.Fatalf("change %+v does not name ov", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("host b saw no change for host a's record")
	}
	if err := b.Put(ctx, recordstest.Rec("ov", "cb", "10.88.1.2", "web-b")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*etcdrecords.Store{a, b} {
		recs, err := s.List(ctx, "ov")
		if err != nil || len(recs) != 2 {
			t.Fatalf("List = %+v, %v; want both hosts' records", recs, err)
		}
	}
	nets, err := b.Networks(ctx)
	if err != nil || len(nets) != 1 || len(nets[0].Gateways) != 1 {
		t.Fatalf("host b's networks = %+v, %v; want its own definition only", nets, err)
	}
	// b cannot delete a's record, and b leaving the network keeps a's.
	if err := b.Delete(ctx, "ov", "ca", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteNetwork(ctx, "ov"); err != nil {
		t.Fatal(err)
	}
	recs, _ := a.List(ctx, "ov")
	if len(recs) != 1 || recs[0].ContainerID != "ca" {
		t.Fatalf("after host b's deletions: %+v, want host a's record only", recs)
	}
	if nets, _ := a.Networks(ctx); len(nets) != 1 {
		t.Fatalf("host a's networks after b left: %+v", nets)
	}
}

func TestUnavailable(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := srv.Client(t)
	srv.Stop()
	s, err := etcdrecords.New(etcdrecords.Options{Client: cli, Host: "h", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = s.PutNetwork(context.Background(), recordstest.Net("ov"))
	var coded codes.Coded
	if !errors.As(err, &coded) || coded.CNICode() != codes.TryAgainLater {
		t.Fatalf("PutNetwork with etcd down: %v, want code 11", err)
	}
}

func TestBadHost(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}}) // never dialled
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, host := range []string{"a/b", "", "../x"} {
		if _, err := etcdrecords.New(etcdrecords.Options{Client: cli, Host: host}); err == nil {
			t.Errorf("host %q was accepted", host)
		}
	}
}

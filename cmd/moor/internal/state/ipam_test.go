package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

// network parses a one-plugin moor-bridge list with the given ipam section.
func network(t *testing.T, name, ipam string) *conflist.Network {
	t.Helper()
	raw := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[{"type":"moor-bridge","ipam":%s}]}`, name, ipam)
	n, err := conflist.Parse("", []byte(raw))
	if err != nil || n.IPAMErr != nil {
		t.Fatalf("network %s: %v %v", name, err, n.IPAMErr)
	}
	return n
}

// attach allocates addresses for containers in the network's store.
func attach(t *testing.T, n *conflist.Network, ids ...string) {
	t.Helper()
	st, err := allocator.OpenStore(n.IPAM)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := allocator.New(n.IPAM, st)
	for _, id := range ids {
		if _, err := a.Allocate(context.Background(), allocator.Request{Key: store.Key{ContainerID: id, IfName: "eth0"}, Netns: "/run/netns/" + id}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLocalIPAMState(t *testing.T) {
	dir := t.TempDir()
	n := network(t, "web", fmt.Sprintf(`{"type":"moor-ipam","subnet":"10.71.0.0/24","dataDir":%q}`, dir))
	ctx := context.Background()
	if atts, err := Attachments(ctx, n); err != nil || len(atts) != 0 {
		t.Fatalf("a store never written: %v %v", atts, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "web.db")); !os.IsNotExist(err) {
		t.Fatalf("reading created the store file (%v)", err)
	}
	attach(t, n, "c1", "c2")
	atts, err := Attachments(ctx, n)
	if err != nil || len(atts) != 2 || atts[0].ContainerID != "c1" || atts[0].IPs[0].String() != "10.71.0.2/24" {
		t.Fatalf("attachments %+v %v", atts, err)
	}
	if StoreLocation(n) != filepath.Join(dir, "web.db") {
		t.Errorf("location %q", StoreLocation(n))
	}
	if err := RemoveIPAM(ctx, n); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("left in %s: %v", dir, entries)
	}
	if err := RemoveIPAM(ctx, n); err != nil {
		t.Errorf("removing twice: %v", err)
	}
	other := network(t, "ref", `{"type":"host-local","subnet":"10.72.0.0/24"}`)
	if _, err := Attachments(ctx, other); !errors.Is(err, ErrNoStore) {
		t.Errorf("host-local network: %v, want ErrNoStore", err)
	}
}

// RemoveIPAM clears the network's etcd prefix and nothing else.
func TestEtcdIPAMState(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	prefix := "/moorcli-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	ipam := func(subnet string) string {
		return fmt.Sprintf(`{"type":"moor-ipam","subnet":%q,"store":{"type":"etcd","endpoints":[%q],"prefix":%q}}`, subnet, srv.Endpoint, prefix)
	}
	web, db := network(t, "web", ipam("10.73.0.0/24")), network(t, "db", ipam("10.74.0.0/24"))
	attach(t, web, "c1", "c2")
	attach(t, db, "c3")
	ctx := context.Background()
	if atts, err := Attachments(ctx, web); err != nil || len(atts) != 2 {
		t.Fatalf("attachments %v %v", atts, err)
	}
	if err := RemoveIPAM(ctx, web); err != nil {
		t.Fatal(err)
	}
	cli := srv.Client(t)
	count := func(p string) int64 {
		resp, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := count(allocator.StorePrefix(web.IPAM)); n != 0 {
		t.Errorf("%d keys left under %s", n, allocator.StorePrefix(web.IPAM))
	}
	if n := count(allocator.StorePrefix(db.IPAM)); n == 0 {
		t.Errorf("the other network's keys were removed")
	}
	if atts, err := Attachments(ctx, db); err != nil || len(atts) != 1 {
		t.Errorf("other network's attachments %v %v", atts, err)
	}
}

package allocator_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/moornet/moor/ipam/allocator"
	_ "github.com/moornet/moor/ipam/allocator/etcdstore" // the etcd store under test
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

// Two "hosts" (two clients of one etcd) allocating at the same time from one pool never
// hand out an address twice; the config's etcd store is what OpenStore opens.
func TestEtcdSharedAcrossHosts(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	raw := []byte(`{"cniVersion":"1.1.0","name":"overlay1","ipam":{"ranges":[[{"subnet":"10.240.0.0/24"}],[{"subnet":"fd00:240::/64"}]],
		"store":{"type":"etcd","endpoints":["` + srv.Endpoint + `"],"prefix":"/moor/test"}}}`)
	const hosts, perHost = 2, 12
	seen := map[string]string{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for h := 0; h < hosts; h++ {
		cfg, err := config.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		st, err := allocator.OpenStore(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		a := allocator.New(cfg, st)
		for i := 0; i < perHost; i++ {
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				res, err := a.Allocate(ctx, allocator.Request{Key: key(id)})
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, ip := range res.IPs {
					if other, dup := seen[ip.Address.String()]; dup {
						t.Errorf("%s handed to %s and %s", ip.Address.String(), other, id)
					}
					seen[ip.Address.String()] = id
				}
			}(fmt.Sprintf("h%d-c%d", h, i))
		}
	}
	wg.Wait()
	if len(seen) != 2*hosts*perHost {
		t.Fatalf("%d distinct addresses, want %d", len(seen), 2*hosts*perHost)
	}
	cfg, _ := config.Parse(raw)
	cfg.Store.Etcd.RequestTimeout = etcdDownTimeout
	st, err := allocator.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	verify(t, st)
	a := allocator.New(cfg, st)
	if err := a.Status(ctx); err != nil {
		t.Fatalf("Status: %v", err)
	}
	srv.Stop()
	if err := a.Status(ctx); err == nil {
		t.Fatal("Status with etcd stopped succeeded")
	}
	_, err = a.Allocate(ctx, allocator.Request{Key: key("late")})
	refused(t, err, codes.TryAgainLater)
}

// etcdDownTimeout keeps the etcd-down checks short.
const etcdDownTimeout = time.Second

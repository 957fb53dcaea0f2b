package etcdkv_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/etcdkv"
	"github.com/moornet/moor/ipam/store/storetest"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
	"github.com/moornet/moor/plugins/etcdconf"
)

// shortTimeout keeps the unreachable-etcd tests quick.
const shortTimeout = 1500 * time.Millisecond

func open(t *testing.T, opts etcdkv.Options) *etcdkv.Store {
	t.Helper()
	st, err := etcdkv.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestContract(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		// One server, a fresh prefix (network) per subtest.
		st, err := etcdkv.Open(etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}}, Prefix: fmt.Sprintf("/moor/ipam/net%d/", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func TestKeysStayUnderPrefix(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	ctx := context.Background()
	a := open(t, etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}}, Prefix: "/moor/ipam/a/"})
	b := open(t, etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}}, Prefix: "/moor/ipam/b/"})
	req := store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")}, Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}}
	for _, st := range []*etcdkv.Store{a, b} {
		att, err := st.Allocate(ctx, req)
		if err != nil || att.IPs[0].String() != "10.0.0.2/24" {
			t.Fatalf("each network allocates on its own: %v, %v", att.IPs, err)
		}
	}
	resp, err := srv.Client(t).Get(ctx, "/moor/ipam/a/ip/10.0.0.2")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "c1/eth0" {
		t.Fatalf("owner key in etcd: %v, %v", resp, err)
	}
}

func TestTLS(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{TLS: true})
	ctx := context.Background()
	st := open(t, etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}, TLS: etcdconf.TLS{CertFile: srv.CertFile, KeyFile: srv.KeyFile, CAFile: srv.CAFile}}, Prefix: "/moor/ipam/tls/"})
	if err := st.Status(ctx); err != nil {
		t.Fatalf("Status over TLS: %v", err)
	}
	if _, err := st.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")},
		Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}}); err != nil {
		t.Fatalf("Allocate over TLS: %v", err)
	}
	// Without the client certificate the server refuses us.
	noCert := open(t, etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}, TLS: etcdconf.TLS{CAFile: srv.CAFile}, RequestTimeout: shortTimeout}, Prefix: "/moor/ipam/tls/"})
	if err := noCert.Status(ctx); err == nil {
		t.Fatal("Status without a client certificate succeeded")
	}
	if _, err := etcdkv.Open(etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}, TLS: etcdconf.TLS{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}}}); err == nil {
		t.Fatal("Open with missing TLS files succeeded")
	}
}

func TestEtcdDownIsTryAgainLater(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	ctx := context.Background()
	st := open(t, etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: shortTimeout, RequestTimeout: shortTimeout}, Prefix: "/moor/ipam/down/"})
	req := store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")}, Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}}
	if _, err := st.Allocate(ctx, req); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	req.Attachment.Key = storetest.Key("c2")
	checks := map[string]func() error{
		"Allocate": func() error { _, err := st.Allocate(ctx, req); return err },
		"Get":      func() error { _, err := st.Get(ctx, storetest.Key("c1")); return err },
		"Release":  func() error { _, err := st.Release(ctx, storetest.Key("c1")); return err },
		"List":     func() error { _, err := st.List(ctx); return err },
		"Status":   func() error { return st.Status(ctx) },
	}
	var wg sync.WaitGroup // each check waits out the timeout: run them side by side
	for name, op := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := op(); storetest.CodeOf(err) != codes.TryAgainLater {
				t.Errorf("%s with etcd down: %v (code %d), want code 11", name, err, storetest.CodeOf(err))
			}
		}()
	}
	wg.Wait()
}

func TestNeverReachable(t *testing.T) {
	// A port nobody listens on: the first operation fails with code 11.
	st := open(t, etcdkv.Options{Etcd: etcdconf.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: shortTimeout, RequestTimeout: shortTimeout}, Prefix: "/x/"})
	if err := st.Status(context.Background()); storetest.CodeOf(err) != codes.TryAgainLater {
		t.Fatalf("Status of an unreachable etcd: %v, want code 11", err)
	}
}

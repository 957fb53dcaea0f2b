package etcdclient_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
	"github.com/moornet/moor/plugins/etcdconf"
)

// The lean binaries (no etcd) must not link the client: their dependency lists hold
// neither this package nor etcd's client; the binaries that talk to etcd hold both.
func TestOnlyEtcdBinariesLinkTheClient(t *testing.T) {
	root := filepath.Join("..", "..")
	for dir, want := range map[string]bool{
		"bridge": false, "macvlan": false, "ipam": false, "none": false, "host": false,
		"cmd/moor-ipam-etcd": true, "dns": true, "overlay": true,
	} {
		cmd := exec.Command("go", "list", "-deps", "./"+dir)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps ./%s: %v", dir, err)
		}
		deps := "\n" + string(out)
		has := strings.Contains(deps, "\ngithub.com/moornet/moor/plugins/etcdclient\n")
		hasEtcd := strings.Contains(deps, "\ngo.etcd.io/etcd/client/v3\n")
		if has != want || hasEtcd != want {
			t.Errorf("%s links etcdclient: %v, etcd's client: %v; want %v", dir, has, hasEtcd, want)
		}
	}
}

// Files that cannot be loaded and endpoints no client accepts are config errors (code 7)
// naming the field under the store's name.
func TestConfigErrorsAreCode7(t *testing.T) {
	for _, tc := range []struct {
		cfg   etcdconf.Config
		field string
	}{
		{etcdconf.Config{Field: "ipam.store", Endpoints: []string{"http://127.0.0.1:1"}, TLS: etcdconf.TLS{CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"}}, "ipam.store.tls"},
		{etcdconf.Config{Field: "store", Endpoints: []string{"http://127.0.0.1:1"}, TLS: etcdconf.TLS{CAFile: "/nonexistent/ca.pem"}}, "store.tls"},
		{etcdconf.Config{Field: "store"}, "store.endpoints"},
	} {
		cli, err := etcdclient.New(tc.cfg)
		if err == nil {
			cli.Close()
		}
		coded, ok := err.(codes.Coded)
		if !ok || coded.CNICode() != codes.InvalidNetworkConfig || !strings.HasPrefix(err.Error(), tc.field+" ") {
			t.Errorf("%+v: %v, want code 7 naming %s", tc.cfg, err, tc.field)
		}
	}
}

// PinKeyPair: the client's key pair is read once, by New, so a process that can no longer
// read it (the DNS sidecar after dropping privileges) still connects; without it the
// handshake reads the files and fails.
func TestPinKeyPair(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{TLS: true})
	for _, pin := range []bool{true, false} {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		for src, dst := range map[string]string{srv.CertFile: cert, srv.KeyFile: key} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cli, err := etcdclient.New(etcdconf.Config{Endpoints: []string{srv.Endpoint}, PinKeyPair: pin,
			TLS: etcdconf.TLS{CertFile: cert, KeyFile: key, CAFile: srv.CAFile}, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(key); err != nil { // New does not connect: the first request does
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Get(ctx, "/moor/pin")
		cancel()
		cli.Close()
		if pin && err != nil {
			t.Errorf("pinned key pair, key file removed: %v", err)
		}
		if !pin && err == nil {
			t.Error("unpinned key pair, key file removed: the request succeeded (did the handshake read the files?)")
		}
	}
}

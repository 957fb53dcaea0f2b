package integration

import (
	"debug/buildinfo"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

// linksEtcdClient reports whether the binary's module list holds the etcd client.
func linksEtcdClient(t *testing.T, bin string) bool {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("build info of %s: %v", bin, err)
	}
	for _, m := range info.Deps {
		if strings.HasPrefix(m.Path, "go.etcd.io/etcd/client") {
			return true
		}
	}
	return false
}

// moor-dns does not link the etcd client (every default-chain ADD would pay its start-up);
// a network whose record store is etcd is served through moor-dns-etcd: ADD registers the
// name in etcd, the sidecar it starts answers from etcd, DEL removes the name.
func TestDNSEtcdStoreThroughLeanBinary(t *testing.T) {
	if linksEtcdClient(t, filepath.Join(binDir, "moor-dns")) {
		t.Error("moor-dns links the etcd client")
	}
	if !linksEtcdClient(t, filepath.Join(binDir, "moor-dns-etcd")) {
		t.Error("moor-dns-etcd does not link the etcd client")
	}
	w := newDNSWorld(t)
	srv := etcdtest.Start(t, etcdtest.Options{NetNS: w.host})
	store := map[string]any{"type": "etcd", "endpoints": []string{srv.Endpoint}, "host": "h1", "prefix": "/moortest/dns"}
	list := w.network("dnsetcd", "mdnse0", "10.221.0.0/24", map[string]any{"store": store})
	web, rtWeb, ipWeb := w.container(list, "web")
	db, _, ipDB := w.container(list, "db")
	gw := "10.221.0.1"
	wantA(t, db, gw, "web", ipWeb)
	wantA(t, web, gw, "db", ipDB)
	w.checkThenDelete(list, rtWeb, db, gw, "web.dns.moor")
}

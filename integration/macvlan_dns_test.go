package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// moor-dns on a macvlan network: the gateway is a router on the LAN, so the sidecar listens
// on the host shim's address, and the containers resolve each other through it. Without a
// shim, ADD says what to do.
func TestMacvlanWithDNSOnTheHostShim(t *testing.T) {
	w := newMvWorld(t)
	dir := t.TempDir()
	t.Cleanup(func() { stopSidecarIn(dir) })
	dnsConf := map[string]any{
		"type":          "moor-dns",
		"storeDir":      filepath.Join(dir, "records"),
		"controlSocket": filepath.Join(dir, "dns.sock"),
		"pidFile":       filepath.Join(dir, "dns.pid"),
		"idleTimeout":   "-1s",
		"capabilities":  map[string]any{"aliases": true},
	}
	// No shim yet: the LAN gateway is not the host's (nor is the host's address on the
	// macvlan master reachable from the containers), so there is nowhere to listen.
	noShim := conflist(t, "1.1.0", "mvdns2", w.mvConf(110, nil), dnsConf)
	_, err := w.rt.add(noShim, attachment(plugintestNetns(t), "eth0"))
	wantCode(t, err, 7, "hostShim")

	list := conflist(t, "1.1.0", "mvdns", w.mvConf(60, map[string]any{"hostShim": true}), dnsConf)
	attach := func(name string) (string, ns.NetNS) {
		ctr := plugintestNetns(t)
		rt := attachment(ctr, "eth0")
		rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", name})
		res, err := w.rt.add(list, rt)
		if err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] == mvLanIP {
			t.Fatalf("nameservers %v: want the host shim's address, not the LAN gateway", res.DNS.Nameservers)
		}
		return res.DNS.Nameservers[0], ctr
	}
	server, _ := attach("web")
	_, db := attach("db")
	web, _, _ := lookup(db, server, "web", 2*time.Second)
	if len(web) != 1 {
		t.Errorf("db could not resolve web through %s: %v", server, web)
	} else if err := ping(db, web[0]); err != nil {
		t.Error(err)
	}
}

// stopSidecarIn ends the sidecar whose pid file is in dir (a test's own sidecar).
func stopSidecarIn(dir string) {
	data, err := os.ReadFile(filepath.Join(dir, "dns.pid"))
	if err != nil {
		return
	}
	if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
}

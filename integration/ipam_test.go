package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
)

// moor-ipam as a binary, exec'd by the reference bridge plugin: the spec's delegation
// path, every verb, requested addresses, exhaustion and STATUS.
func TestIPAMBinaryUnderReferenceBridge(t *testing.T) {
	w := newWorld(t, "")
	dataDir := w.dataDir
	conf := map[string]any{
		"type":      "bridge", // the reference plugin from /usr/lib/cni
		"bridge":    "mipam0",
		"isGateway": true,
		"ipam": map[string]any{
			"type":    "moor-ipam",
			"ranges":  [][]map[string]any{{{"subnet": "10.218.0.0/29"}}, {{"subnet": "fd00:218::/64"}}},
			"dataDir": dataDir,
		},
	}
	list := conflist(t, "1.0.0", "ipamnet", conf) // Debian's reference plugins stop at 1.0.0

	ctr1, rt1, res1 := w.attach(list)
	if len(res1.IPs) != 2 {
		t.Fatalf("dual-stack result has %d addresses: %+v", len(res1.IPs), res1.IPs)
	}
	if err := ping(ctr1, "10.218.0.1"); err != nil {
		t.Error(err)
	}
	if err := w.rt.check(list, rt1); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// A requested address (CNI_ARGS IP=, as podman and CRI-O send it).
	ctr2 := plugintestNetns(t)
	rt2 := attachment(ctr2, "eth0")
	rt2.Args = append(rt2.Args, [2]string{"IP", "10.218.0.5"})
	res2, err := w.rt.add(list, rt2)
	if err != nil {
		t.Fatalf("ADD with IP=10.218.0.5: %v", err)
	}
	if ipOf(res2) != "10.218.0.5" {
		t.Errorf("got %s, want the requested 10.218.0.5", ipOf(res2))
	}
	// The same address again is refused (101) and nothing changes.
	ctr3 := plugintestNetns(t)
	rt3 := attachment(ctr3, "eth0")
	rt3.Args = append(rt3.Args, [2]string{"IP", "10.218.0.5"})
	_, err = w.rt.add(list, rt3)
	wantCode(t, err, 101, "10.218.0.5")
	// Out of every range (102). (A fresh netns: the reference bridge leaves its veth
	// behind when IPAM fails, the very bug moor-bridge's undo stack exists for.)
	rt4 := attachment(plugintestNetns(t), "eth0")
	rt4.Args = append(rt4.Args, [2]string{"IP", "10.219.0.5"})
	_, err = w.rt.add(list, rt4)
	wantCode(t, err, 102, "10.219.0.5")
	// Fill the /29 (.2-.6 usable, .1 is the gateway), then exhaustion (100).
	for i := 0; i < 3; i++ {
		w.attach(list)
	}
	_, err = w.rt.add(list, attachment(plugintestNetns(t), "eth0"))
	wantCode(t, err, 100, "5 of 5 addresses in use")
	if got := len(w.reservations("ipamnet")); got != 5 {
		t.Errorf("%d reservations, want 5", got)
	}
	// DEL frees, twice is fine; GC with an empty list frees the rest.
	for i := 0; i < 2; i++ {
		if err := w.rt.del(list, rt1); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	// GC and STATUS are 1.1.0 verbs, which Debian's reference bridge lacks: drive moor-ipam
	// directly under a moor-bridge network of the same name and data dir.
	gcList := conflist(t, "1.1.0", "ipamnet", w.bridgeConf("mipam0", "", map[string]any{"ipam": conf["ipam"]}))
	if err := w.rt.status(gcList); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if err := newRuntime(t, w.host).gc(gcList); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if r := w.reservations("ipamnet"); len(r) != 0 {
		t.Errorf("after GC: %v", r)
	}
	db := filepath.Join(dataDir, "ipamnet.db")
	if info, err := os.Stat(db); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("store file %s: %v mode %v, want 0600", db, err, info.Mode().Perm())
	}
}

// STATUS is 50 when the store cannot be used; the message says why.
func TestIPAMStatusStoreUnusable(t *testing.T) {
	w := newWorld(t, "")
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := w.bridgeConf("mipam1", "10.219.0.0/24", nil)
	conf["ipam"] = map[string]any{"type": "moor-ipam", "subnet": "10.219.0.0/24", "dataDir": filepath.Join(blocker, "sub")}
	list := conflist(t, "1.1.0", "ipamdown", conf)
	err := w.rt.status(list)
	wantCode(t, err, 50, "")
	if !strings.Contains(err.Error(), "IPAM") {
		t.Errorf("STATUS error %q does not name IPAM", err)
	}
}

// Neither moor-bridge nor moor-ipam links the etcd client (its package init would cost
// every ADD milliseconds): an etcd-backed moor-ipam config is exec'd to moor-ipam-etcd,
// from moor-bridge's in-process IPAM and from the moor-ipam binary alike.
func TestBridgeWithEtcdIPAMExecsMoorIPAM(t *testing.T) {
	w := newWorld(t, "")
	srv := etcdtest.Start(t, etcdtest.Options{NetNS: w.host}) // where the plugins run
	ipamConf := map[string]any{"type": "moor-ipam", "subnet": "10.228.0.0/24", "store": map[string]any{"type": "etcd", "endpoints": []string{srv.Endpoint}}}
	list := w.network("etcdnet", "metcd0", "", map[string]any{"ipam": ipamConf})
	ctr, rt, res := w.attach(list)
	if ipOf(res) != "10.228.0.2" {
		t.Errorf("address %q from the etcd store, want 10.228.0.2", ipOf(res))
	}
	if err := ping(ctr, "10.228.0.1"); err != nil {
		t.Error(err)
	}
	if err := w.rt.check(list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	// The address is free again: the next container gets the next one round robin, and
	// GC with nothing valid leaves nothing.
	_, _, res2 := w.attach(list)
	if ipOf(res2) == "" {
		t.Fatal("no address after DEL")
	}
	if err := newRuntime(t, w.host).gc(list); err != nil {
		t.Fatalf("GC: %v", err)
	}
	// The reference bridge execs moor-ipam, which hands the etcd config on.
	refConf := map[string]any{"type": "bridge", "bridge": "metcd1", "isGateway": true,
		"ipam": map[string]any{"type": "moor-ipam", "subnet": "10.229.0.0/24", "store": map[string]any{"type": "etcd", "endpoints": []string{srv.Endpoint}}}}
	refList := conflist(t, "1.0.0", "etcdref", refConf)
	rctr, rrt, rres := w.attach(refList)
	if ipOf(rres) != "10.229.0.2" {
		t.Errorf("address %q through moor-ipam, want 10.229.0.2", ipOf(rres))
	}
	if err := ping(rctr, "10.229.0.1"); err != nil {
		t.Error(err)
	}
	if err := w.rt.del(refList, rrt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

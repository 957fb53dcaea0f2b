package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

// codesWorld is a host netns with one veth pair (a macvlan master, a host device) and a
// runtime whose CNI_PATH starts with a directory of test doubles (a hanging IPAM plugin, a
// moor-bridge without CAP_NET_ADMIN), then the built binaries.
type codesWorld struct {
	t       *testing.T
	host    ns.NetNS
	rt      *runtime
	doubles string
	dataDir string
}

const codesDummy = "mcodes0"

func newCodesWorld(t *testing.T) *codesWorld {
	t.Helper()
	w := &codesWorld{t: t, host: plugintest.Netns(t, "moorit-codes"), doubles: t.TempDir(), dataDir: t.TempDir()}
	w.rt = newRuntime(t, w.host)
	w.rt.cni.Path = append([]string{w.doubles}, w.rt.cni.Path...)
	err := w.host.Do(func(ns.NetNS) error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: codesDummy}, PeerName: codesDummy + "p"})
	})
	if err != nil {
		t.Fatalf("veth pair: %v", err)
	}
	// A plugin that never answers; its child holds its stdout (the deadline kills both).
	w.double("hang-ipam", "#!/bin/sh\nsleep 600\n")
	// moor-bridge without CAP_NET_ADMIN, as in a user namespace or an unprivileged runtime.
	w.double("moor-bridge-unprivileged", "#!/bin/sh\nexec setpriv --bounding-set -net_admin --inh-caps -net_admin -- "+filepath.Join(binDir, "moor-bridge")+"\n")
	return w
}

func (w *codesWorld) double(name, script string) {
	if err := os.WriteFile(filepath.Join(w.doubles, name), []byte(script), 0o755); err != nil {
		w.t.Fatal(err)
	}
}

// goneNetns is the path of a network namespace that existed and was deleted.
func (w *codesWorld) goneNetns() string {
	n, err := plugintest.NewNamedNetns("moorit-codesgone-" + plugintest.RandomSuffix())
	if err != nil {
		w.t.Fatal(err)
	}
	path := n.Path()
	deleteNetns(n)
	return path
}

func (w *codesWorld) bridge(bridge string, ipam map[string]any, extra map[string]any) map[string]any {
	if ipam == nil {
		ipam = map[string]any{"type": "moor-ipam", "subnet": "10.219.0.0/24", "dataDir": w.dataDir}
	}
	conf := map[string]any{"type": "moor-bridge", "bridge": bridge, "isGateway": true, "ipam": ipam}
	for k, v := range extra {
		conf[k] = v
	}
	return conf
}

// Every condition docs/errors.md lists for more than one plugin gives the same code in
// each, through the built binaries as a runtime calls them (libcni), and names what failed.
func TestErrorCodesThroughBinaries(t *testing.T) {
	w := newCodesWorld(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	badTLS := map[string]any{"certFile": "/nonexistent/moor-codes/cert.pem", "keyFile": "/nonexistent/moor-codes/key.pem"}
	etcdIPAM := map[string]any{"type": "moor-ipam", "subnet": "10.219.1.0/24",
		"store": map[string]any{"type": "etcd", "endpoints": []string{"http://127.0.0.1:1"}, "tls": badTLS}}
	overlay := map[string]any{"type": "moor-overlay", "subnet": "10.244.0.0/16", "hostID": "h",
		"store": map[string]any{"endpoints": []string{"http://127.0.0.1:1"}}}
	withOverlayTLS := map[string]any{"type": "moor-overlay", "subnet": "10.244.0.0/16", "hostID": "h",
		"store": map[string]any{"endpoints": []string{"http://127.0.0.1:1"}, "tls": badTLS}}
	dnsEtcd := map[string]any{"type": "moor-dns", "storeDir": filepath.Join(t.TempDir(), "records"),
		"store": map[string]any{"type": "etcd", "endpoints": []string{"http://127.0.0.1:1"}, "host": "h1", "tls": badTLS}}

	cases := []struct {
		name     string
		plugins  []map[string]any
		gone     bool              // CNI_NETNS names a namespace that was deleted
		env      map[string]string // the runtime's environment
		code     uint
		mentions string
	}{
		// A vanished container netns: code 3 (container unknown) in every interface plugin.
		{name: "netns gone moor-bridge", plugins: []map[string]any{w.bridge("mcb0", nil, nil)}, gone: true, code: codes.UnknownContainer, mentions: "network namespace is gone"},
		{name: "netns gone moor-macvlan", plugins: []map[string]any{{"type": "moor-macvlan", "master": codesDummy,
			"ipam": map[string]any{"type": "moor-ipam", "subnet": "10.219.2.0/24", "dataDir": w.dataDir}}}, gone: true, code: codes.UnknownContainer, mentions: "network namespace is gone"},
		{name: "netns gone moor-none", plugins: []map[string]any{{"type": "moor-none"}}, gone: true, code: codes.UnknownContainer, mentions: "network namespace is gone"},
		{name: "netns gone moor-host", plugins: []map[string]any{{"type": "moor-host", "device": codesDummy}}, gone: true, code: codes.UnknownContainer, mentions: "network namespace is gone"},
		{name: "netns gone moor-overlay", plugins: []map[string]any{overlay}, gone: true, code: codes.UnknownContainer, mentions: "network namespace is gone"},
		// A bad combination of fields: code 7.
		{name: "ipMasqBackend contradicts firewallBackend", plugins: []map[string]any{w.bridge("mcb1", nil, map[string]any{"firewallBackend": "nftables", "ipMasqBackend": "iptables"})},
			code: codes.InvalidNetworkConfig, mentions: "ipMasqBackend"},
		// etcd TLS files that cannot be loaded: code 7 naming the field, in every plugin.
		{name: "etcd TLS moor-ipam-etcd", plugins: []map[string]any{w.bridge("mcb2", etcdIPAM, nil)}, code: codes.InvalidNetworkConfig, mentions: "ipam.store.tls"},
		{name: "etcd TLS moor-dns", plugins: []map[string]any{w.bridge("mcb3", nil, nil), dnsEtcd}, code: codes.InvalidNetworkConfig, mentions: "store.tls"},
		{name: "etcd TLS moor-overlay", plugins: []map[string]any{withOverlayTLS}, code: codes.InvalidNetworkConfig, mentions: "store.tls"},
		// An exec'd IPAM plugin that never answers: code 11 naming it, after MOOR_IPAM_TIMEOUT.
		{name: "hung IPAM plugin", plugins: []map[string]any{w.bridge("mcb4", map[string]any{"type": "hang-ipam"}, nil)},
			env: map[string]string{"MOOR_IPAM_TIMEOUT": "2s"}, code: codes.TryAgainLater, mentions: "IPAM plugin hang-ipam (ADD) did not answer within 2s"},
		// The kernel refuses for lack of privilege (EPERM): code 111.
		{name: "no CAP_NET_ADMIN", plugins: []map[string]any{func() map[string]any {
			c := w.bridge("mcb5", nil, nil)
			c["type"] = "moor-bridge-unprivileged"
			return c
		}()}, code: codes.NotPermitted, mentions: "operation not permitted"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var netnsPath string
			if tc.gone {
				netnsPath = w.goneNetns()
			} else {
				netnsPath = plugintest.Netns(t, "moorit-codesc").Path()
			}
			list := conflist(t, "1.1.0", "codes"+string(rune('a'+i)), tc.plugins...)
			rt := &libcni.RuntimeConf{ContainerID: "ctr" + plugintest.RandomSuffix(), NetNS: netnsPath, IfName: "eth0"}
			before := hostLinkNames(t, w.host)
			_, err := w.rt.add(list, rt)
			t.Cleanup(func() { _ = w.rt.del(list, rt) })
			wantCode(t, err, tc.code, tc.mentions)
			if len(tc.plugins) == 1 { // a failed single-plugin ADD leaves no new link on the host
				for name := range hostLinkNames(t, w.host) {
					if !before[name] {
						t.Errorf("the failed ADD left link %s on the host", name)
					}
				}
			}
		})
	}
}

// hostLinkNames is the set of the links of netns, for before/after comparisons.
func hostLinkNames(t *testing.T, netns ns.NetNS) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := netns.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names[l.Attrs().Name] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// Inputs that used to pass or fail with the wrong code, through the binaries: each is
// refused with the spec's code naming the field, and the host is left exactly as it was
// (links, routes, the IPAM data directory). docs/security.md lists them.
func TestSecurityLooseChecksRefused(t *testing.T) {
	dnsOnly := func(w *dnsWorld) *libcni.NetworkConfigList {
		return conflist(t, "1.1.0", "dnsonly", w.dnsConf(nil))
	}
	for _, tc := range []struct {
		name string
		code uint
		says string
		// list returns the network to ADD and may attach other containers first.
		list func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList
		// rt adjusts the refused attachment.
		rt func(rt *libcni.RuntimeConf)
		// chained: moor-dns refuses after moor-bridge attached; the runtime's DEL of
		// the failed ADD removes the rest.
		chained bool
	}{
		{name: "multicast mac", code: 7, says: "CNI_ARGS MAC", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.world.network("mcast", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.Args = append(rt.Args, [2]string{"MAC", "01:00:5e:00:00:01"}) }},
		{name: "gateway outside the subnet", code: 7, says: `ipam.gateway "192.0.2.1"`, list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			c := w.bridgeConf("mchk0", "10.233.0.0/24", nil)
			c["ipam"].(map[string]any)["gateway"] = "192.0.2.1"
			return conflist(t, "1.1.0", "gwout", c)
		}},
		{name: "subnet 0.0.0.0/0", code: 7, says: `ipam.subnet "0.0.0.0/0"`, list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.world.network("all4", "mchk0", "0.0.0.0/0", nil)
		}},
		{name: "subnet ::/0", code: 7, says: `ipam.subnet "::/0"`, list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.world.network("all6", "mchk0", "::/0", nil)
		}},
		{name: "ifname with a quote, bridge", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.network("ifq", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = `e"th0` }},
		{name: "ifname with =, bridge", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.network("ifeq", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = "eth=0" }},
		{name: "ifname with a backslash, bridge", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.network("ifbs", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = `eth\0` }},
		{name: "ifname with ;, bridge", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.network("ifsc", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = "eth;0" }},
		{name: "ifname with a leading dot, bridge", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.network("ifdot", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = ".eth0" }},
		{name: "ifname with a leading dash, bridge", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return w.network("ifdash", "mchk0", "10.233.0.0/24", nil)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = "-eth0" }},
		{name: "ifname with a quote, dns", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return dnsOnly(w)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = `e"th0` }},
		{name: "ifname with a leading dash, dns", code: 4, says: "CNI_IFNAME", list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			return dnsOnly(w)
		}, rt: func(rt *libcni.RuntimeConf) { rt.IfName = "-eth0" }},
		{name: "alias is another container's name", code: 7, says: `runtimeConfig.aliases[0] "web"`, list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			list := w.network("aliasname", "mchk0", "10.233.0.0/24", nil)
			w.container(list, "web")
			return list
		}, rt: func(rt *libcni.RuntimeConf) {
			rt.CapabilityArgs = map[string]any{"aliases": []string{"web"}}
		}, chained: true},
		{name: "alias is another container's short ID", code: 7, says: `runtimeConfig.aliases[0] "cshortidvict"`, list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			list := w.network("aliasid", "mchk0", "10.233.0.0/24", nil)
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			rt.ContainerID = "cshortidvictim"
			if _, err := w.rt.add(list, rt); err != nil {
				t.Fatal(err)
			}
			return list
		}, rt: func(rt *libcni.RuntimeConf) {
			rt.CapabilityArgs = map[string]any{"aliases": []string{"cshortidvict"}}
		}, chained: true},
		{name: "bridge already used", code: 7, says: `bridge "mchk0"`, list: func(t *testing.T, w *dnsWorld) *libcni.NetworkConfigList {
			// The owner's store lives elsewhere: the refused network's directory is
			// the one that must stay empty.
			ownerDir := t.TempDir()
			c := w.bridgeConf("mchk0", "10.233.0.0/24", nil)
			c["ipam"].(map[string]any)["dataDir"] = ownerDir
			w.attach(conflist(t, "1.1.0", "owner", c))
			return w.world.network("intruder", "mchk0", "10.233.0.0/24", nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDNSWorld(t)
			list := tc.list(t, w)
			links, routes := w.hostLinks(), ownRoutes(w.world)
			files, _ := os.ReadDir(w.dataDir)
			rt := attachment(plugintestNetns(t), "eth0")
			if tc.rt != nil {
				tc.rt(rt)
			}
			_, err := w.rt.add(list, rt)
			wantCode(t, err, tc.code, tc.says)
			if tc.chained {
				if err := w.rt.del(list, rt); err != nil {
					t.Fatalf("DEL of the failed ADD: %v", err)
				}
			}
			if got := w.hostLinks(); !slices.Equal(got, links) {
				t.Errorf("host links %v, want %v", got, links)
			}
			if got := ownRoutes(w.world); !slices.Equal(got, routes) {
				t.Errorf("host routes %v, want %v", got, routes)
			}
			if got, _ := os.ReadDir(w.dataDir); len(got) != len(files) {
				t.Errorf("IPAM data directory holds %v, want %v", got, files)
			}
		})
	}
}

// ownRoutes lists the host's routes but the ones the kernel adds by itself to every
// link with IPv6 (fe80::/64 and ff00::/8), which appear whenever autoconfiguration gets
// to a link.
func ownRoutes(w *world) []string {
	var out []string
	for _, r := range (&mvWorld{world: w}).hostRoutes() {
		if !strings.Contains(r, "Dst: fe80::/64 ") && !strings.Contains(r, "Dst: ff00::/8 ") {
			out = append(out, r)
		}
	}
	return out
}

// The host-wide firewall lock follows MOOR_RUN_DIR like every other volatile state path.
func TestSecurityFirewallLockFollowsRunDir(t *testing.T) {
	w := newWorld(t, "")
	run := t.TempDir()
	t.Setenv("MOOR_RUN_DIR", run)
	list := w.network("fwlock", "mfwl0", "10.235.0.0/24", nil)
	_, rt, _ := w.attach(list)
	fi, err := os.Stat(filepath.Join(run, "firewall.lock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("firewall lock under MOOR_RUN_DIR: %v %v", fi, err)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

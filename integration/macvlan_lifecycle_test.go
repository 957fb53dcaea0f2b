package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/plugintest"
)

// A failed ADD leaves nothing: links, routes, reservations (the shim's too) and the
// container's interface are as before; with a shim already serving another attachment,
// the shim stays.
func TestMacvlanFaultsRollBack(t *testing.T) {
	points := []string{"macvlan/after-link", "macvlan/after-ipam", "macvlan/after-shim", "macvlan/after-addresses", "ipam/after-reserve"}
	w := newMvWorld(t)
	for i, point := range points {
		t.Run(point, func(t *testing.T) {
			network := fmt.Sprintf("mvfault%d", i)
			list := w.mvNetwork(network, 10, map[string]any{"hostShim": true})
			snap := w.snapshot()
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			t.Setenv("MOOR_TEST_FAULT", point)
			if _, err := w.rt.add(list, rt); err == nil {
				t.Fatalf("ADD with %s armed succeeded", point)
			}
			w.wantBack(t, snap, network)
			if l := linkIn(t, ctr, "eth0"); l != nil {
				t.Error("eth0 left in the container")
			}
			t.Setenv("MOOR_TEST_FAULT", "")
			if _, err := w.rt.add(list, rt); err != nil {
				t.Fatalf("the next ADD: %v", err)
			}
			if err := w.rt.del(list, rt); err != nil {
				t.Errorf("DEL: %v", err)
			}
		})
	}
	// The reservation's commit runs beside the interface work (ipamclient.ReserveDurableLater)
	// and is joined before macvlan/after-addresses: a plugin killed there has its
	// addresses in the store file, and DEL releases them.
	t.Run("killed after the addresses", func(t *testing.T) {
		list := w.mvNetwork("mvfaultkill", 100, nil)
		rt := attachment(plugintestNetns(t), "eth0")
		t.Setenv("MOOR_TEST_FAULT", "macvlan/after-addresses:kill")
		_, err := w.rt.add(list, rt)
		t.Setenv("MOOR_TEST_FAULT", "")
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("ADD with macvlan/after-addresses:kill: %v, want killed", err)
		}
		if r := w.reservations("mvfaultkill"); len(r) != 1 || !strings.HasPrefix(r[0], rt.ContainerID) {
			t.Fatalf("reservations after the kill %v, want the killed ADD's (durable before the interface was done)", r)
		}
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if r := w.reservations("mvfaultkill"); len(r) != 0 {
			t.Errorf("reservations after DEL: %v", r)
		}
	})
	t.Run("shim in use", func(t *testing.T) {
		list := w.mvNetwork("mvfaultuse", 50, map[string]any{"hostShim": true})
		_, _, res := w.mvAttach(list)
		shim, snap := w.onlyShim(), w.snapshot()
		t.Setenv("MOOR_TEST_FAULT", "macvlan/after-addresses")
		if _, err := w.rt.add(list, attachment(plugintestNetns(t), "eth0")); err == nil {
			t.Fatal("ADD with the fault armed succeeded")
		}
		if got := w.onlyShim(); got != shim {
			t.Errorf("shim %q after the failed ADD, want %q", got, shim)
		}
		if now := w.hostRoutes(); strings.Join(now, ",") != strings.Join(snap.routes, ",") {
			t.Errorf("host routes changed: %v -> %v", snap.routes, now)
		}
		if r := w.reservations("mvfaultuse"); len(r) != 2 {
			t.Errorf("reservations %v, want the first container's and the shim's", r)
		}
		if err := ping(w.host, ipOf(res)); err != nil {
			t.Errorf("the first container lost the host: %v", err)
		}
	})
}

func TestMacvlanDelAfterNetnsGone(t *testing.T) {
	w := newMvWorld(t)
	snap := w.snapshot()
	list := w.mvNetwork("mvgone", 10, map[string]any{"hostShim": true})
	ctr, err := plugintestNamed("moorit-mvgone")
	if err != nil {
		t.Fatal(err)
	}
	rt := attachment(ctr, "eth0")
	if _, err := w.rt.add(list, rt); err != nil {
		deleteNetns(ctr)
		t.Fatal(err)
	}
	deleteNetns(ctr)
	for i := 0; i < 2; i++ {
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL #%d after the netns is gone: %v", i+1, err)
		}
	}
	w.wantBack(t, snap, "mvgone")
}

// A DEL that dies half way (after the container's link) is finished by the next DEL.
func TestMacvlanDelInterrupted(t *testing.T) {
	w := newMvWorld(t)
	snap := w.snapshot()
	list := w.mvNetwork("mvdelint", 10, map[string]any{"hostShim": true})
	ctr, rt, _ := w.mvAttach(list)
	t.Setenv("MOOR_TEST_FAULT", "macvlan/del-after-link")
	if err := w.rt.del(list, rt); err == nil {
		t.Fatal("DEL with the fault armed succeeded")
	}
	if linkIn(t, ctr, "eth0") != nil || len(w.shims()) != 1 || len(w.reservations("mvdelint")) != 2 {
		t.Fatalf("after the interrupted DEL: eth0 %v, shims %v, reservations %v", linkIn(t, ctr, "eth0"), w.shims(), w.reservations("mvdelint"))
	}
	t.Setenv("MOOR_TEST_FAULT", "")
	if err := w.rt.del(list, rt); err != nil {
		t.Fatalf("the next DEL: %v", err)
	}
	w.wantBack(t, snap, "mvdelint")
}

// GC, from a runtime that lost its cache, keeps exactly the valid attachments: their
// addresses, the shim and its routes to them; with nothing valid, everything goes.
func TestMacvlanGC(t *testing.T) {
	w := newMvWorld(t)
	snap := w.snapshot()
	list := w.mvNetwork("mvgc", 10, map[string]any{"hostShim": true})
	_, rtKeep, resKeep := w.mvAttach(list)
	_, _, _ = w.mvAttach(list)
	_, _, _ = w.mvAttach(list)
	fresh := newRuntime(t, w.host)
	if err := fresh.gc(list, rtKeep); err != nil {
		t.Fatalf("GC: %v", err)
	}
	r := w.reservations("mvgc")
	if len(r) != 2 || !contains(r, rtKeep.ContainerID+"/eth0") || !contains(r, "moor-shim-mvgc/shim") {
		t.Errorf("reservations after GC %v, want the kept container's and the shim's", r)
	}
	if n := w.shimRoutes(); n != 1 {
		t.Errorf("%d shim routes after GC, want 1", n)
	}
	if err := ping(w.host, ipOf(resKeep)); err != nil {
		t.Errorf("the kept container lost the host: %v", err)
	}
	if err := fresh.gc(list); err != nil {
		t.Fatal(err)
	}
	w.wantBack(t, snap, "mvgc")
}

func TestMacvlanCheckFindsDrift(t *testing.T) {
	w := newMvWorld(t)
	list := w.mvNetwork("mvdrift", 10, map[string]any{"hostShim": true})
	ctr, rt, res := w.mvAttach(list)
	if err := w.rt.check(list, rt); err != nil {
		t.Fatalf("CHECK before drift: %v", err)
	}
	ip := ipOf(res)
	steps := []struct {
		name     string
		netns    ns.NetNS
		cmd      []string
		mentions string
	}{
		{"changed MAC", ctr, []string{"ip", "link", "set", "eth0", "address", "02:11:22:33:44:55"}, "MAC 02:11:22:33:44:55"},
		{"changed mode", ctr, []string{"ip", "link", "set", "eth0", "type", "macvlan", "mode", "private"}, "mode private"},
		{"removed address", ctr, []string{"ip", "addr", "del", ip + mvPrefix, "dev", "eth0"}, "address " + ip + mvPrefix + " is missing"},
		{"removed shim route", w.host, []string{"ip", "route", "del", ip + "/32", "proto", fmt.Sprint(shimProto)}, "host route to " + ip},
		{"deleted link", ctr, []string{"ip", "link", "del", "eth0"}, "eth0 is missing"},
	}
	for _, s := range steps {
		err := s.netns.Do(func(ns.NetNS) error {
			out, err := execOut(s.cmd[0], s.cmd[1:]...)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		wantCode(t, w.rt.check(list, rt), 110, s.mentions)
	}
}

// The versions table: every spec version moor answers, through libcni, with the verbs
// each version has.
func TestMacvlanSpecVersions(t *testing.T) {
	w := newMvWorld(t)
	for i, v := range versionsFrom("0.3.0") {
		t.Run(v, func(t *testing.T) {
			network := fmt.Sprintf("mvver%d", i)
			list := conflist(t, v, network, w.mvConf(10, nil))
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			res, err := w.rt.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Sandbox != ctr.Path() || ipOf(res) == "" {
				t.Fatalf("result %+v", res)
			}
			macvlanIn(t, ctr, "eth0")
			if err := ping(ctr, mvLanIP); err != nil {
				t.Error(err)
			}
			if atLeast(v, "0.4.0") {
				if err := w.rt.check(list, rt); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if atLeast(v, "1.1.0") {
				if err := w.rt.status(list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
				if err := w.rt.gc(list, rt); err != nil {
					t.Errorf("GC: %v", err)
				}
			}
			if err := w.rt.del(list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if l := linkIn(t, ctr, "eth0"); l != nil {
				t.Error("eth0 left after DEL")
			}
			if r := w.reservations(network); len(r) != 0 {
				t.Errorf("reservations after DEL: %v", r)
			}
		})
	}
}

// On a kernel without 802.1q links a <link>.<id> master is refused with code 104 naming
// 8021q, and the refused ADD leaves nothing. (TestMacvlanVlanMaster is the other side.)
func TestMacvlanVlanMasterRefused(t *testing.T) {
	plugintest.RequireKernelWithout(t, plugintest.Kernel8021Q)
	w := newMvWorld(t)
	snap := w.snapshot()
	list := w.mvNetwork("mvvlan", 10, map[string]any{"master": mvParent + ".10"})
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	_, err := w.rt.add(list, rt)
	wantCode(t, err, 104, "8021q")
	w.wantBack(t, snap, "mvvlan")
	if l := linkIn(t, ctr, "eth0"); l != nil {
		t.Error("eth0 left in the container")
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Errorf("DEL after the refused ADD: %v", err)
	}
}

// Refused configs and masters give code 7 naming the culprit and change nothing.
func TestMacvlanBadConfigs(t *testing.T) {
	w := newMvWorld(t)
	w.addParent("mvdown0", "mvdownw0", "", "", false)
	cases := []struct {
		name     string
		extra    map[string]any
		mentions string
	}{
		{"missing master", map[string]any{"master": "nope0"}, `master "nope0": no such link`},
		{"down master", map[string]any{"master": "mvdown0"}, `master "mvdown0": the link is down`},
		{"loopback master", map[string]any{"master": "lo"}, "cannot carry macvlans"},
		{"mtu above the master's", map[string]any{"mtu": mvMTU + 100}, fmt.Sprintf("mtu %d: above the MTU %d", mvMTU+100, mvMTU)},
		{"negative mtu", map[string]any{"mtu": -1}, "mtu -1"},
		{"unknown mode", map[string]any{"mode": "l2"}, `mode "l2"`},
		{"multicast mac", map[string]any{"mac": "01:00:5e:00:00:01"}, "multicast"},
		{"bad mac", map[string]any{"mac": "zz"}, `mac "zz"`},
		{"vlan id out of range", map[string]any{"master": "mvpar0.5000"}, `master "mvpar0.5000"`},
		{"vlan on a missing link", map[string]any{"master": "nope0.10"}, `no link "nope0"`},
		{"shim without ipam", map[string]any{"hostShim": true, "ipam": map[string]any{}}, "hostShim"},
		{"shim in passthru", map[string]any{"hostShim": true, "mode": "passthru"}, "hostShim"},
		{"shim with linkInContainer", map[string]any{"hostShim": true, "linkInContainer": true}, "linkInContainer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := w.snapshot()
			ctr := plugintestNetns(t)
			_, err := w.rt.add(w.mvNetwork("mvbad", 10, tc.extra), attachment(ctr, "eth0"))
			wantCode(t, err, 7, tc.mentions)
			w.wantBack(t, snap, "mvbad")
			if l := linkIn(t, ctr, "eth0"); l != nil {
				t.Error("eth0 left in the container")
			}
		})
	}
	t.Run("STATUS with a down master", func(t *testing.T) {
		wantCode(t, w.rt.status(w.mvNetwork("mvbad", 10, map[string]any{"master": "mvdown0"})), 50, "mvdown0")
	})
	t.Run("interface already in the container", func(t *testing.T) {
		snap := w.snapshot()
		ctr := plugintest.Netns(t, "moorit-mvc")
		w.addParentIn(ctr, "eth0")
		_, err := w.rt.add(w.mvNetwork("mvbad", 10, nil), attachment(ctr, "eth0"))
		wantCode(t, err, 105, "eth0")
		w.wantBack(t, snap, "mvbad")
	})
}

package integration

import (
	"net"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

func loopbackUp(t *testing.T, netns ns.NetNS) bool {
	t.Helper()
	up := false
	err := netns.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err == nil {
			up = lo.Attrs().Flags&net.FlagUp != 0
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return up
}

func TestVersionOfEveryBinary(t *testing.T) {
	host := plugintest.Netns(t, "moorit-ver")
	r := newRuntime(t, host)
	for _, plugin := range []string{"moor-none", "moor-host"} {
		versions, err := r.version(plugin)
		if err != nil {
			t.Fatalf("%s VERSION: %v", plugin, err)
		}
		if len(versions) != 5 || versions[4] != "1.1.0" {
			t.Errorf("%s supports %v", plugin, versions)
		}
	}
}

func TestNoneLifecycle(t *testing.T) {
	for _, v := range versionsFrom("0.3.0") {
		t.Run(v, func(t *testing.T) {
			host := plugintest.Netns(t, "moorit-noneh")
			ctr := plugintest.Netns(t, "moorit-nonec")
			r := newRuntime(t, host)
			list := conflist(t, v, "none-net", map[string]any{"type": "moor-none"})
			rt := attachment(ctr, "lo")

			res, err := r.add(list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if !loopbackUp(t, ctr) {
				t.Fatal("lo is down after ADD")
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "lo" || len(res.IPs) != 2 {
				t.Errorf("result %+v", res)
			}
			if atLeast(v, "0.4.0") {
				if err := r.check(list, rt); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if atLeast(v, "1.1.0") {
				if err := r.status(list); err != nil {
					t.Errorf("STATUS: %v", err)
				}
				if err := r.gc(list); err != nil {
					t.Errorf("GC: %v", err)
				}
			}
			if err := r.del(list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if loopbackUp(t, ctr) {
				t.Error("lo still up after DEL")
			}
			if err := r.del(list, rt); err != nil {
				t.Errorf("second DEL: %v", err)
			}
		})
	}
}

func TestNoneCheckCatchesDownLoopback(t *testing.T) {
	host := plugintest.Netns(t, "moorit-noneh")
	ctr := plugintest.Netns(t, "moorit-nonec")
	r := newRuntime(t, host)
	list := conflist(t, "1.1.0", "none-net", map[string]any{"type": "moor-none"})
	rt := attachment(ctr, "lo")
	if _, err := r.add(list, rt); err != nil {
		t.Fatal(err)
	}
	_ = ctr.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetDown(lo)
	})
	wantCode(t, r.check(list, rt), 110, "lo is down")
	if err := r.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

func TestNoneDelAfterNetnsGone(t *testing.T) {
	host := plugintest.Netns(t, "moorit-noneh")
	ctr, err := plugintest.NewNamedNetns("moorit-nonegone-" + plugintest.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, host)
	list := conflist(t, "1.0.0", "none-net", map[string]any{"type": "moor-none"})
	rt := attachment(ctr, "lo")
	if _, err := r.add(list, rt); err != nil {
		_ = plugintest.DeleteNetns(ctr)
		t.Fatal(err)
	}
	if err := plugintest.DeleteNetns(ctr); err != nil {
		t.Fatal(err)
	}
	if err := r.del(list, rt); err != nil {
		t.Errorf("DEL after the netns was deleted: %v", err)
	}
	rt.NetNS = ""
	if err := r.del(list, rt); err != nil {
		t.Errorf("DEL with an empty CNI_NETNS: %v", err)
	}
}

func TestNoneRefusesHostNetns(t *testing.T) {
	host := plugintest.Netns(t, "moorit-noneh")
	r := newRuntime(t, host)
	list := conflist(t, "1.0.0", "none-net", map[string]any{"type": "moor-none"})
	wantCode(t, func() error { _, err := r.add(list, attachment(host, "lo")); return err }(), 7, "moor-none needs the container's own network namespace")
}

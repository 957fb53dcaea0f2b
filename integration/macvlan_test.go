package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

func TestMacvlanBridgeModeContainersReachEachOther(t *testing.T) {
	w := newMvWorld(t)
	list := w.mvNetwork("mvbr", 10, nil)
	ctr1, rt1, res1 := w.mvAttach(list)
	ctr2, rt2, res2 := w.mvAttach(list)

	// The reference's result shape: one interface, the container's, every address on it.
	if len(res1.Interfaces) != 1 || res1.Interfaces[0].Name != "eth0" || res1.Interfaces[0].Sandbox != ctr1.Path() {
		t.Fatalf("interfaces %+v", res1.Interfaces)
	}
	mv := macvlanIn(t, ctr1, "eth0")
	if res1.Interfaces[0].Mac != mv.Attrs().HardwareAddr.String() {
		t.Errorf("result MAC %s, link MAC %s", res1.Interfaces[0].Mac, mv.Attrs().HardwareAddr)
	}
	if mv.Mode != netlink.MACVLAN_MODE_BRIDGE || mv.Attrs().ParentIndex != w.parentIndex(mvParent) {
		t.Errorf("mode %d parent %d, want bridge on %s", mv.Mode, mv.Attrs().ParentIndex, mvParent)
	}
	if len(res1.IPs) != 1 || res1.IPs[0].Interface == nil || *res1.IPs[0].Interface != 0 {
		t.Errorf("ips %+v", res1.IPs)
	}
	ip1, ip2 := ipOf(res1), ipOf(res2)
	if ip1 == "" || ip1 == ip2 {
		t.Fatalf("addresses %q and %q", ip1, ip2)
	}
	for _, c := range []struct {
		from ns.NetNS
		to   string
	}{{ctr1, ip2}, {ctr2, ip1}, {ctr1, mvLanIP}, {w.lan, ip2}} {
		if err := ping(c.from, c.to); err != nil {
			t.Error(err)
		}
	}
	// The kernel keeps a master and its macvlans apart: without a shim the host cannot
	// reach its containers (TestMacvlanHostShim lifts that).
	if err := ping(w.host, ip1); err == nil {
		t.Error("the host reached a macvlan container through the master")
	}
	if err := w.rt.check(list, rt1); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := w.rt.status(list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := w.rt.del(list, rt1); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if err := w.rt.del(list, rt2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []ns.NetNS{ctr1, ctr2} {
		if l := linkIn(t, c, "eth0"); l != nil {
			t.Errorf("eth0 left in %s", c.Path())
		}
	}
	if r := w.reservations("mvbr"); len(r) != 0 {
		t.Errorf("addresses still held: %v", r)
	}
}

// TestMacvlanPrivateModeKeepsContainersApart: mode private, and icc false (which is mode
// private), keep containers on one master apart in both directions while the LAN and the
// containers reach each other both ways.
func TestMacvlanPrivateModeKeepsContainersApart(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts map[string]any
	}{{"mode private", map[string]any{"mode": "private"}}, {"icc false", map[string]any{"icc": false, "mode": nil}}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newMvWorld(t)
			list := w.mvNetwork("mvpriv", 10, tc.opts)
			ctr1, _, res1 := w.mvAttach(list)
			ctr2, _, res2 := w.mvAttach(list)
			if m := macvlanIn(t, ctr1, "eth0").Mode; m != netlink.MACVLAN_MODE_PRIVATE {
				t.Errorf("mode %d, want private", m)
			}
			if err := ping(ctr1, ipOf(res2)); err == nil {
				t.Error("a container reached its sibling")
			}
			if err := ping(ctr2, ipOf(res1)); err == nil {
				t.Error("a container reached its sibling")
			}
			for _, c := range []ns.NetNS{ctr1, ctr2} {
				if err := pingEventually(c, mvLanIP); err != nil {
					t.Errorf("must still reach the LAN: %v", err)
				}
			}
			for _, ip := range []string{ipOf(res1), ipOf(res2)} {
				if err := pingEventually(w.lan, ip); err != nil {
					t.Errorf("the LAN must still reach the containers: %v", err)
				}
			}
		})
	}
}

// Every mode is created as asked (read back from the kernel); passthru takes a master of
// its own and refuses a second macvlan on it.
func TestMacvlanModes(t *testing.T) {
	want := map[string]netlink.MacvlanMode{
		"bridge":   netlink.MACVLAN_MODE_BRIDGE,
		"private":  netlink.MACVLAN_MODE_PRIVATE,
		"vepa":     netlink.MACVLAN_MODE_VEPA,
		"passthru": netlink.MACVLAN_MODE_PASSTHRU,
	}
	w := newMvWorld(t)
	i := 0
	for mode, kernel := range want {
		i++
		t.Run(mode, func(t *testing.T) {
			parent := fmt.Sprintf("mvmode%d", i)
			w.addParent(parent, fmt.Sprintf("mvmodew%d", i), "", "", true)
			list := w.mvNetwork("mvmode-"+mode, 10, map[string]any{"mode": mode, "master": parent})
			ctr, rt, _ := w.mvAttach(list)
			mv := macvlanIn(t, ctr, "eth0")
			if mv.Mode != kernel {
				t.Errorf("mode %d, want %d (%s)", mv.Mode, kernel, mode)
			}
			if mv.Attrs().ParentIndex != w.parentIndex(parent) {
				t.Errorf("parent %d, want %s", mv.Attrs().ParentIndex, parent)
			}
			if err := w.rt.check(list, rt); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if mode == "passthru" {
				other := plugintestNetns(t)
				_, err := w.rt.add(list, attachment(other, "eth0"))
				wantCode(t, err, 7, parent)
				if r := w.reservations("mvmode-" + mode); len(r) != 1 {
					t.Errorf("the refused ADD left reservations: %v", r)
				}
			}
			if err := w.rt.del(list, rt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMacvlanHostShim(t *testing.T) {
	w := newMvWorld(t)
	snap := w.snapshot()
	list := w.mvNetwork("mvshim", 50, map[string]any{"hostShim": true})
	ctrB, rtB, resB := w.mvAttach(list)
	shimIP := w.onlyShim()
	if !strings.HasPrefix(shimIP, "10.230.0.") {
		t.Fatalf("shim address %q is not from the network", shimIP)
	}
	if err := ping(w.host, ipOf(resB)); err != nil {
		t.Errorf("host to container through the shim: %v", err)
	}
	if err := ping(ctrB, shimIP); err != nil {
		t.Errorf("container to the host's shim address: %v", err)
	}
	if err := ping(w.host, mvLanIP); err != nil {
		t.Errorf("the host lost the LAN: %v", err)
	}
	if r := w.reservations("mvshim"); len(r) != 2 || !contains(r, "moor-shim-mvshim/shim") {
		t.Errorf("reservations %v, want the container's and the shim's", r)
	}
	if err := w.rt.check(list, rtB); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	// A repeated ADD of the live attachment is refused and takes nothing from it.
	_, err := w.rt.add(list, rtB)
	wantCode(t, err, 105, "eth0")
	if err := w.rt.check(list, rtB); err != nil {
		t.Errorf("CHECK after the refused repeat: %v", err)
	}

	ctrC, rtC, resC := w.mvAttach(list)
	if got := w.onlyShim(); got != shimIP {
		t.Errorf("a second attachment changed the shim: %s -> %s", shimIP, got)
	}
	if err := w.rt.del(list, rtB); err != nil {
		t.Fatal(err)
	}
	if got := w.onlyShim(); got != shimIP {
		t.Errorf("the shim changed or went with an attachment left: %q", got)
	}
	if n := w.shimRoutes(); n != 1 {
		t.Errorf("%d shim routes after one of two DELs, want 1", n)
	}
	if err := ping(w.host, ipOf(resC)); err != nil {
		t.Errorf("host to the remaining container: %v", err)
	}
	if err := ping(ctrC, shimIP); err != nil {
		t.Error(err)
	}
	if err := w.rt.del(list, rtC); err != nil {
		t.Fatal(err)
	}
	if s := w.shims(); len(s) != 0 {
		t.Errorf("shims left after the last DEL: %v", s)
	}
	w.wantBack(t, snap, "mvshim")
}

// Attachments that come and go concurrently on one shim network: every ADD finds the shim
// serving it (CHECK passes, the host reaches the container), and after the last DEL the
// shim, its routes and every reservation are gone.
func TestMacvlanShimConcurrentAttachments(t *testing.T) {
	const workers, rounds = 6, 3
	w := newMvWorld(t)
	snap := w.snapshot()
	list := w.mvNetwork("mvconc", 50, map[string]any{"hostShim": true})
	ctrs := make([]ns.NetNS, workers)
	for i := range ctrs {
		ctrs[i] = plugintestNetns(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(ctr ns.NetNS) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				rt := attachment(ctr, "eth0")
				res, err := w.rt.add(list, rt)
				if err != nil {
					errs <- fmt.Errorf("ADD: %w", err)
					return
				}
				if err := w.rt.check(list, rt); err != nil {
					errs <- fmt.Errorf("CHECK: %w", err)
				}
				if err := ping(w.host, ipOf(res)); err != nil {
					errs <- fmt.Errorf("host to %s: %w", ipOf(res), err)
				}
				if err := w.rt.del(list, rt); err != nil {
					errs <- fmt.Errorf("DEL: %w", err)
					return
				}
			}
		}(ctrs[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	w.wantBack(t, snap, "mvconc")
}

// Dual stack: the shim holds an address of each family and the host reaches the
// container over both; the container's IPv6 address needs no DAD wait.
func TestMacvlanHostShimDualStack(t *testing.T) {
	const v6Subnet = "fd00:230::/64"
	w := newMvWorld(t)
	snap := w.snapshot()
	ipam := map[string]any{
		"type": "moor-ipam",
		"ranges": [][]map[string]any{
			{{"subnet": mvSubnet, "rangeStart": "10.230.0.60", "rangeEnd": "10.230.0.69", "gateway": mvLanIP}},
			{{"subnet": v6Subnet, "rangeStart": "fd00:230::10", "rangeEnd": "fd00:230::19"}},
		},
		"dataDir": w.dataDir,
	}
	list := w.mvNetwork("mvdual", 60, map[string]any{"hostShim": true, "ipam": ipam})
	ctr, rt, res := w.mvAttach(list)
	var v6, shimV6 string
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() == nil {
			v6 = ipc.Address.IP.String()
		}
	}
	for name := range w.shims() {
		if addrs := w.hostAddrs(name, netlink.FAMILY_V6); len(addrs) > 0 {
			shimV6 = addrs[0]
		}
	}
	if v6 == "" || shimV6 == "" {
		t.Fatalf("container IPv6 %q, shim IPv6 %q", v6, shimV6)
	}
	for _, c := range []struct {
		from ns.NetNS
		to   string
	}{{w.host, ipOf(res)}, {w.host, v6}, {ctr, shimV6}} {
		if err := ping(c.from, c.to); err != nil {
			t.Error(err)
		}
	}
	if err := w.rt.check(list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
	w.wantBack(t, snap, "mvdual")
}

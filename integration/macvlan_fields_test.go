package integration

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// A conflist written for the reference macvlan plugin, with the reference host-local as
// IPAM, works with only its type changed, and both plugins give results of one shape.
func TestMacvlanReferenceConfigUnchanged(t *testing.T) {
	w := newMvWorld(t)
	refConf := func(pluginType, rangeStart, rangeEnd string) map[string]any {
		return map[string]any{
			"type":   pluginType,
			"master": mvParent,
			"mode":   "bridge",
			"ipam": map[string]any{
				"type":       "host-local",
				"subnet":     mvSubnet,
				"rangeStart": rangeStart,
				"rangeEnd":   rangeEnd,
				"gateway":    mvLanIP,
				"routes":     []map[string]any{{"dst": "0.0.0.0/0"}},
				"dataDir":    t.TempDir(),
			},
		}
	}
	results := map[string]*current.Result{}
	for _, tc := range []struct{ pluginType, start, end string }{
		{"macvlan", "10.230.0.100", "10.230.0.119"},
		{"moor-macvlan", "10.230.0.120", "10.230.0.139"},
	} {
		list := conflist(t, "1.0.0", "ref-"+tc.pluginType, refConf(tc.pluginType, tc.start, tc.end))
		ctr, rt, res := w.mvAttach(list)
		results[tc.pluginType] = res
		mv := macvlanIn(t, ctr, "eth0")
		if mv.Mode != netlink.MACVLAN_MODE_BRIDGE || mv.Attrs().ParentIndex != w.parentIndex(mvParent) {
			t.Errorf("%s: mode %d parent %d", tc.pluginType, mv.Mode, mv.Attrs().ParentIndex)
		}
		if err := ping(ctr, mvLanIP); err != nil {
			t.Errorf("%s: %v", tc.pluginType, err)
		}
		if err := w.rt.check(list, rt); err != nil {
			t.Errorf("%s CHECK: %v", tc.pluginType, err)
		}
		if err := w.rt.del(list, rt); err != nil {
			t.Errorf("%s DEL: %v", tc.pluginType, err)
		}
		if l := linkIn(t, ctr, "eth0"); l != nil {
			t.Errorf("%s: eth0 left after DEL", tc.pluginType)
		}
	}
	ref, moor := results["macvlan"], results["moor-macvlan"]
	if len(ref.Interfaces) != len(moor.Interfaces) || len(ref.IPs) != len(moor.IPs) || len(ref.Routes) != len(moor.Routes) {
		t.Fatalf("result shapes differ:\nreference %+v\nmoor      %+v", ref, moor)
	}
	if ref.Interfaces[0].Name != moor.Interfaces[0].Name || (ref.Interfaces[0].Sandbox == "") != (moor.Interfaces[0].Sandbox == "") {
		t.Errorf("interfaces differ: %+v vs %+v", ref.Interfaces[0], moor.Interfaces[0])
	}
	if *ref.IPs[0].Interface != *moor.IPs[0].Interface || !ref.IPs[0].Gateway.Equal(moor.IPs[0].Gateway) {
		t.Errorf("ips differ: %+v vs %+v", ref.IPs[0], moor.IPs[0])
	}
	if ref.Routes[0].Dst.String() != moor.Routes[0].Dst.String() {
		t.Errorf("routes differ: %+v vs %+v", ref.Routes[0], moor.Routes[0])
	}
}

// MAC precedence: config mac < CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac.
func TestMacvlanMACPrecedence(t *testing.T) {
	const (
		confMAC    = "02:00:00:00:00:01"
		cniArgsMAC = "02:00:00:00:00:02"
		argsMAC    = "02:00:00:00:00:03"
		rcMAC      = "02:00:00:00:00:04"
	)
	w := newMvWorld(t)
	cases := []struct {
		name                   string
		cniArgs, args, runtime bool
		want                   string
	}{
		{"config", false, false, false, confMAC},
		{"CNI_ARGS", true, false, false, cniArgsMAC},
		{"args.cni", true, true, false, argsMAC},
		{"runtimeConfig", true, true, true, rcMAC},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]any{"mac": confMAC, "capabilities": map[string]any{"mac": true}}
			if tc.args {
				extra["args"] = map[string]any{"cni": map[string]any{"mac": argsMAC}}
			}
			list := w.mvNetwork("mvmac", 10, extra)
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			if tc.cniArgs {
				rt.Args = append(rt.Args, [2]string{"MAC", cniArgsMAC})
			}
			if tc.runtime {
				rt.CapabilityArgs = map[string]any{"mac": rcMAC}
			}
			res, err := w.rt.add(list, rt)
			if err != nil {
				t.Fatal(err)
			}
			if got := macvlanIn(t, ctr, "eth0").Attrs().HardwareAddr.String(); got != tc.want || res.Interfaces[0].Mac != tc.want {
				t.Errorf("link MAC %s, result MAC %s, want %s", got, res.Interfaces[0].Mac, tc.want)
			}
			if err := w.rt.del(list, rt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// mtu and bcqueuelen reach the kernel; an unset master is the default route's link.
func TestMacvlanMTUQueueAndDefaultMaster(t *testing.T) {
	const (
		mtu        = 1400
		bcQueueLen = 100
	)
	w := newMvWorld(t)
	list := w.mvNetwork("mvfields", 10, map[string]any{"master": nil, "mtu": mtu, "bcqueuelen": bcQueueLen})
	ctr, rt, res := w.mvAttach(list)
	mv := macvlanIn(t, ctr, "eth0")
	if mv.Attrs().MTU != mtu || res.Interfaces[0].Mtu != mtu {
		t.Errorf("link MTU %d, result MTU %d, want %d", mv.Attrs().MTU, res.Interfaces[0].Mtu, mtu)
	}
	if mv.BCQueueLen != bcQueueLen {
		t.Errorf("bcqueuelen %d, want %d", mv.BCQueueLen, bcQueueLen)
	}
	if mv.Attrs().ParentIndex != w.parentIndex(mvParent) {
		t.Errorf("parent %d, want the default route's link %s", mv.Attrs().ParentIndex, mvParent)
	}
	if err := w.rt.check(list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
}

// linkInContainer: the master lives in the container's netns; the macvlan is made there.
func TestMacvlanLinkInContainer(t *testing.T) {
	w := newMvWorld(t)
	conf := w.mvConf(10, map[string]any{"master": "cmaster0", "linkInContainer": true})
	delete(conf, "ipam")
	list := conflist(t, "1.1.0", "mvinctr", conf)
	ctr := plugintestNetns(t)
	w.addParentIn(ctr, "cmaster0")
	rt := attachment(ctr, "eth0")
	res, err := w.rt.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 0 {
		t.Errorf("ips %+v without ipam", res.IPs)
	}
	mv := macvlanIn(t, ctr, "eth0")
	if master := linkIn(t, ctr, "cmaster0"); mv.Attrs().ParentIndex != master.Attrs().Index {
		t.Errorf("parent %d, want cmaster0 (%d) in the container", mv.Attrs().ParentIndex, master.Attrs().Index)
	}
	if mv.Attrs().Flags&net.FlagUp == 0 {
		t.Error("an L2-only macvlan must be up")
	}
	if err := w.rt.check(list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, ctr, "eth0") != nil || linkIn(t, ctr, "cmaster0") == nil {
		t.Error("DEL must remove eth0 and leave the master")
	}
}

// A reused address with a new MAC: the container announces itself at link up (arp_notify,
// as the reference plugin sets), so the LAN's stale neighbour entry is corrected without
// the LAN sending anything.
func TestMacvlanAnnouncesNewMAC(t *testing.T) {
	const ip = "10.230.0.30"
	w := newMvWorld(t)
	list := w.mvNetwork("mvgarp", 10, map[string]any{"capabilities": map[string]any{"ips": true}})
	add := func() (ns.NetNS, *libcni.RuntimeConf, string) {
		ctr := plugintestNetns(t)
		rt := attachment(ctr, "eth0")
		rt.CapabilityArgs = map[string]any{"ips": []string{ip + mvPrefix}}
		res, err := w.rt.add(list, rt)
		if err != nil || ipOf(res) != ip {
			t.Fatalf("ADD: %v (%+v)", err, res)
		}
		return ctr, rt, res.Interfaces[0].Mac
	}
	_, rt1, mac1 := add()
	if err := ping(w.lan, ip); err != nil {
		t.Fatal(err)
	}
	if got := w.lanNeighbour(ip); got != mac1 {
		t.Fatalf("the LAN has %q for %s, want %s", got, ip, mac1)
	}
	if err := w.rt.del(list, rt1); err != nil {
		t.Fatal(err)
	}
	_, _, mac2 := add()
	// The announcement is sent when the link comes up; wait for it to land (no timing
	// is asserted: the bound only keeps a broken build from hanging).
	deadline := time.Now().Add(5 * time.Second)
	for w.lanNeighbour(ip) != mac2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := w.lanNeighbour(ip); got != mac2 {
		t.Errorf("the LAN still has %q for %s, want the new container's %s", got, ip, mac2)
	}
}

// lanNeighbour is the LAN's neighbour entry (MAC) for ip on its wire, or "".
func (w *mvWorld) lanNeighbour(ip string) string {
	mac := ""
	_ = w.lan.Do(func(ns.NetNS) error {
		wire, err := netlinksafe.LinkByName(mvWire)
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(wire.Attrs().Index, netlink.FAMILY_V4)
		for _, n := range neighs {
			if n.IP.String() == ip && n.HardwareAddr != nil {
				mac = n.HardwareAddr.String()
			}
		}
		return err
	})
	return mac
}

// examples/macvlan.conflist works as shipped once its LAN values (master, subnet) are
// this test's.
func TestMacvlanExampleConflist(t *testing.T) {
	w := newMvWorld(t)
	data, err := os.ReadFile(filepath.Join("..", "examples", "macvlan.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var example struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &example); err != nil {
		t.Fatal(err)
	}
	conf := example.Plugins[0]
	conf["master"], conf["lockDir"] = mvParent, w.lockDir
	ipam := conf["ipam"].(map[string]any)
	for k, v := range map[string]any{"subnet": mvSubnet, "rangeStart": "10.230.0.200", "rangeEnd": "10.230.0.220", "gateway": mvLanIP, "dataDir": w.dataDir} {
		ipam[k] = v
	}
	list := conflist(t, example.CNIVersion, example.Name, conf)
	ctr, rt, res := w.mvAttach(list)
	if err := ping(w.host, ipOf(res)); err != nil {
		t.Errorf("host to container: %v", err)
	}
	if err := ping(ctr, mvLanIP); err != nil {
		t.Errorf("container to the LAN: %v", err)
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

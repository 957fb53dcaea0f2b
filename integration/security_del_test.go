package integration

import (
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// DEL deletes only the link its attachment made: a DEL naming the host's own namespace
// and a host link, or another attachment's container with the wrong container ID,
// deletes nothing (and succeeds: there is nothing of that attachment left); the right
// DEL still deletes the link. Bridge (veths, found by the host end's altname) and
// macvlan (the container link's tag).
func TestSecurityDelOnlyOwnLinks(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns a network, an attached container and the host link kind to plant.
		setup func(t *testing.T) (w *world, list *libcni.NetworkConfigList, ctr ns.NetNS, rt *libcni.RuntimeConf, hostLink func(name string) netlink.Link)
	}{
		{"bridge", func(t *testing.T) (*world, *libcni.NetworkConfigList, ns.NetNS, *libcni.RuntimeConf, func(string) netlink.Link) {
			w := newWorld(t, "")
			list := w.network("delown", "mdel0", "10.232.0.0/24", nil)
			ctr, rt, _ := w.attach(list)
			return w, list, ctr, rt, func(name string) netlink.Link {
				// (this kernel has no dummy links)
				return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
			}
		}},
		{"macvlan", func(t *testing.T) (*world, *libcni.NetworkConfigList, ns.NetNS, *libcni.RuntimeConf, func(string) netlink.Link) {
			w := newMvWorld(t)
			list := w.mvNetwork("delownmv", 10, nil)
			ctr, rt, _ := w.mvAttach(list)
			parent := w.parentIndex(mvParent)
			return w.world, list, ctr, rt, func(name string) netlink.Link {
				// A macvlan in the host, as a host shim or an operator's link is.
				return &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: parent}, Mode: netlink.MACVLAN_MODE_BRIDGE}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, list, ctr, rt, hostLink := tc.setup(t)
			const uplink = "uplink"
			if err := w.host.Do(func(ns.NetNS) error { return netlink.LinkAdd(hostLink(uplink)) }); err != nil {
				t.Fatal(err)
			}
			// The host's own namespace as CNI_NETNS, a host link as CNI_IFNAME.
			hostDel := &libcni.RuntimeConf{ContainerID: "ctr" + plugintest.RandomSuffix(), NetNS: w.host.Path(), IfName: uplink, Args: rt.Args}
			if err := w.rt.del(list, hostDel); err != nil {
				t.Fatalf("DEL in the host's namespace: %v", err)
			}
			if linkIn(t, w.host, uplink) == nil {
				t.Fatal("DEL deleted the host's uplink")
			}
			// Another attachment's container and ifname, with a container ID that is not its.
			wrongID := *rt
			wrongID.ContainerID = "ctr" + plugintest.RandomSuffix()
			if err := w.rt.del(list, &wrongID); err != nil {
				t.Fatalf("DEL with the wrong container ID: %v", err)
			}
			if linkIn(t, ctr, "eth0") == nil {
				t.Fatal("DEL with the wrong container ID deleted another attachment's eth0")
			}
			if err := w.rt.del(list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if linkIn(t, ctr, "eth0") != nil {
				t.Fatal("the attachment's own DEL left its eth0")
			}
			if linkIn(t, w.host, uplink) == nil {
				t.Fatal("the host's uplink is gone")
			}
		})
	}
}

// The same for moor-overlay (veths found by the host end's altname), on a lab host with a
// container the lab attached: a DEL naming the host's namespace and its underlay link,
// and a DEL of the container's eth0 with another container ID, delete nothing.
func TestSecurityOverlayDelOnlyOwnLinks(t *testing.T) {
	l := upLab(t, labPlugin)
	h2, err := l.Host("h2")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := l.Container("c2")
	if err != nil {
		t.Fatal(err)
	}
	rt := hostRuntime(t, h2)
	list, err := libcni.ConfListFromFile(mustConflist(t, l, "h2"))
	if err != nil {
		t.Fatal(err)
	}
	hostLinks := links(t, h2.Netns)
	ctrLinks := links(t, c2.Netns)
	for _, del := range []*libcni.RuntimeConf{
		{ContainerID: "ctr" + plugintest.RandomSuffix(), NetNS: h2.NetnsPath(), IfName: "eth0", Args: [][2]string{{"IgnoreUnknown", "1"}}},
		{ContainerID: "ctr" + plugintest.RandomSuffix(), NetNS: "/run/netns/" + c2.Netns, IfName: c2.Attachments[0].IfName, Args: [][2]string{{"IgnoreUnknown", "1"}}},
	} {
		if err := rt.del(list, del); err != nil {
			t.Fatalf("DEL %s in %s: %v", del.IfName, del.NetNS, err)
		}
		if got := links(t, h2.Netns); !slices.Equal(got, hostLinks) {
			t.Fatalf("after DEL %s in %s: host links %v, want %v", del.IfName, del.NetNS, got, hostLinks)
		}
		if got := links(t, c2.Netns); !slices.Equal(got, ctrLinks) {
			t.Fatalf("after DEL %s in %s: container links %v, want %v", del.IfName, del.NetNS, got, ctrLinks)
		}
	}
	if c2.Attachments[0].IP == "" {
		t.Fatal("the lab's container has no address")
	}
}

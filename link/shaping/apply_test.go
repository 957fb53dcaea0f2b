package shaping

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
)

// ifbsOf lists the ifb devices in the netns of h.
func ifbsOf(t *testing.T, h netlinksafe.Handle) []string {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if l.Type() == "ifb" {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

// shapingLeftOn names the qdiscs and filters shaping puts on dev that are there.
func shapingLeftOn(t *testing.T, h netlinksafe.Handle, dev netlink.Link) []string {
	t.Helper()
	qdiscs, err := h.QdiscList(dev)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, q := range qdiscs {
		if q.Type() == "tbf" || q.Type() == "ingress" {
			left = append(left, q.Type()+" qdisc")
		}
	}
	filters, err := h.FilterList(dev, ingressHandle)
	if err == nil && len(filters) > 0 {
		left = append(left, "ingress filter")
	}
	return left
}

func TestApplyMakesTheIfbInItsFinalState(t *testing.T) {
	h, dev, _ := pair(t)
	ifb := IfbFor("net1", "ctr1", "eth0")
	if err := Apply(h, dev, testLimits.HostSide(), ifb, plugins.NewUndo(nil)); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(ifb.AltName)
	if err != nil {
		t.Fatalf("ifb by its altname: %v", err)
	}
	a := link.Attrs()
	if link.Type() != "ifb" || a.Name != ifb.Name || a.Flags&net.FlagUp == 0 || a.MTU != dev.Attrs().MTU {
		t.Errorf("ifb %s: type %s, up %v, MTU %d; want ifb %s, up, MTU %d", a.Name, link.Type(), a.Flags&net.FlagUp != 0, a.MTU, ifb.Name, dev.Attrs().MTU)
	}
	// Created with IPv6 addressing off: up, and still no link-local address.
	if addrs, err := h.AddrList(link, netlink.FAMILY_V6); err != nil || len(addrs) != 0 {
		t.Errorf("IPv6 addresses on the ifb: %v (%v)", addrs, err)
	}
	if tbf := rootTbfOf(h, link); tbf == nil || tbf.Rate*8 != testLimits.EgressRate {
		t.Errorf("ifb's root tbf: %+v, want %d bit/s", tbf, testLimits.EgressRate)
	}
	filters, err := h.FilterList(dev, ingressHandle)
	if err != nil || len(filters) != 1 {
		t.Fatalf("filters on %s's ingress: %v (%v)", dev.Attrs().Name, filters, err)
	}
	if u, ok := filters[0].(*netlink.U32); !ok || !redirectsTo(u, a.Index) {
		t.Errorf("the filter does not redirect to the ifb (index %d): %+v", a.Index, filters[0])
	}
	// dev's state is the caller's: Apply leaves a device that is down, down.
	if d, err := h.LinkByIndex(dev.Attrs().Index); err != nil || d.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("%s after Apply: %v (%v), want down", dev.Attrs().Name, d, err)
	}
	if p := Check(h, dev, testLimits.HostSide(), ifb); len(p) != 0 {
		t.Errorf("Check: %v", p)
	}
}

func TestApplyRollsBackEveryStep(t *testing.T) {
	for _, step := range []string{"tbf", "ifb", "ifb tbf", "ifb up", "ingress", "filter"} {
		t.Run(step, func(t *testing.T) {
			h, dev, _ := pair(t)
			injected := errors.New("injected after " + step)
			stepDone = func(s string) error {
				if s == step {
					return injected
				}
				return nil
			}
			t.Cleanup(func() { stepDone = func(string) error { return nil } })
			undo := plugins.NewUndo(nil)
			if err := Apply(h, dev, testLimits.HostSide(), IfbFor("net1", "ctr1", "eth0"), undo); !errors.Is(err, injected) {
				t.Fatalf("Apply: %v, want the injected failure", err)
			}
			if err := undo.Rollback(); err != nil {
				t.Fatal(err)
			}
			if left := shapingLeftOn(t, h, dev); len(left) != 0 {
				t.Errorf("left on %s: %v", dev.Attrs().Name, left)
			}
			if ifbs := ifbsOf(t, h); len(ifbs) != 0 {
				t.Errorf("ifbs left: %v", ifbs)
			}
		})
	}
}

func TestApplyReplacesAStaleIfbOnly(t *testing.T) {
	h, dev, _ := pair(t)
	ifb := IfbFor("net1", "ctr1", "eth0")
	// What a crashed ADD of the same attachment left: its ifb, with its altname.
	stale, err := createIfb(h, ifb, dev.Attrs().MTU)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(h, dev, testLimits.HostSide(), ifb, plugins.NewUndo(nil)); err != nil {
		t.Fatalf("Apply over a stale ifb: %v", err)
	}
	link, err := h.LinkByName(ifb.AltName)
	if err != nil || link.Attrs().Index == stale.Attrs().Index {
		t.Errorf("the stale ifb was not replaced: %v (%v)", link, err)
	}
	if ifbs := ifbsOf(t, h); len(ifbs) != 1 {
		t.Errorf("ifbs: %v, want one", ifbs)
	}

	// A device of that name that is not this attachment's ifb is left alone, and the
	// failed Apply rolls back what it made before.
	h2, dev2, _ := pair(t)
	other := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: ifb.Name}}
	if err := h2.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	undo := plugins.NewUndo(nil)
	err = Apply(h2, dev2, testLimits.HostSide(), ifb, undo)
	if err == nil || !strings.Contains(err.Error(), "a bridge device of that name exists") {
		t.Fatalf("Apply over a bridge named %s: %v", ifb.Name, err)
	}
	if err := undo.Rollback(); err != nil {
		t.Fatal(err)
	}
	if l, err := h2.LinkByName(ifb.Name); err != nil || l.Type() != "bridge" {
		t.Errorf("the bridge: %v (%v)", l, err)
	}
	if left := shapingLeftOn(t, h2, dev2); len(left) != 0 {
		t.Errorf("left on %s: %v", dev2.Attrs().Name, left)
	}
}

func TestAddHostBringsADownHostEndUp(t *testing.T) {
	h, dev, _ := pair(t)
	call := &plugins.Call{ContainerID: "ctr1", IfName: "eth0"}
	if err := AddHost(call, h, dev, "net1", testLimits, plugins.NewUndo(nil)); err != nil {
		t.Fatal(err)
	}
	d, err := h.LinkByIndex(dev.Attrs().Index)
	if err != nil || d.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("%s after AddHost: %v (%v), want up", dev.Attrs().Name, d, err)
	}
	if p := CheckHost(call, h, d, "net1", testLimits); len(p) != 0 {
		t.Errorf("CheckHost: %v", p)
	}
	// Nothing to shape: the host end is not touched.
	h2, dev2, _ := pair(t)
	if err := AddHost(call, h2, dev2, "net1", nil, plugins.NewUndo(nil)); err != nil {
		t.Fatal(err)
	}
	if d, err := h2.LinkByIndex(dev2.Attrs().Index); err != nil || d.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("%s after AddHost without limits: %v (%v), want it left down", dev2.Attrs().Name, d, err)
	}
}

package shaping

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

func TestResolve(t *testing.T) {
	static := Limits{IngressRate: 1e6, IngressBurst: 1e6}
	for _, c := range []struct {
		name    string
		runtime string
		static  Limits
		want    *Limits
		field   string // code 7 naming it, "" for success
	}{
		{"nothing", "", Limits{}, nil, ""},
		{"null", "null", Limits{}, nil, ""},
		{"static", "", static, &static, ""},
		{"runtime wins", `{"egressRate":2000000,"egressBurst":400000}`, static, &Limits{EgressRate: 2e6, EgressBurst: 4e5}, ""},
		{"kubelet's no-burst", `{"ingressRate":10000000,"ingressBurst":2147483647}`, Limits{}, &Limits{IngressRate: 1e7, IngressBurst: math.MaxInt32}, ""},
		{"containerd's no-burst at a low rate", `{"egressRate":100000,"egressBurst":4294967295}`, Limits{}, &Limits{EgressRate: 1e5, EgressBurst: math.MaxUint32}, ""},
		{"rate without burst", `{"ingressRate":1000000}`, Limits{}, nil, "ingressBurst"},
		{"burst without rate", `{"egressBurst":1000000}`, Limits{}, nil, "egressBurst"},
		{"static rate without burst", "", Limits{EgressRate: 5}, nil, "egressBurst"},
		{"rate under a byte", `{"ingressRate":7,"ingressBurst":80000}`, Limits{}, nil, "ingressRate"},
		{"burst past the buffer", `{"ingressRate":8000,"ingressBurst":80000000000}`, Limits{}, nil, "ingressBurst"},
		{"burst under tbf's resolution", `{"egressRate":8000000000000,"egressBurst":8}`, Limits{}, nil, "egressBurst"},
		{"not an object", `"fast"`, Limits{}, nil, "runtimeConfig.bandwidth"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Resolve(json.RawMessage(c.runtime), c.static)
			if c.field != "" {
				var ce *codes.Error
				if !errors.As(err, &ce) || ce.Code != codes.InvalidNetworkConfig || !strings.Contains(ce.Msg, c.field) {
					t.Fatalf("got %v, want code 7 naming %s", err, c.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestTicksPerUsecIsTheKernels(t *testing.T) {
	// vishvananda/netlink reads /proc/net/psched for it; 0 if the file cannot be read.
	if got := netlink.TickInUsec(); got != ticksPerUsec {
		t.Fatalf("this kernel's scheduler clock: %v ticks per µs, the package assumes %v", got, ticksPerUsec)
	}
}

func TestTbfParamsRoundTrip(t *testing.T) {
	tbf, err := tbfParams(10_000_000, 80_000)
	if err != nil {
		t.Fatal(err)
	}
	if tbf.Rate != 1_250_000 {
		t.Errorf("rate %d bytes/s", tbf.Rate)
	}
	if b := burstBytes(tbf); b < 9_900 || b > 10_000 {
		t.Errorf("the buffer holds %d bytes, want 10000", b)
	}
}

// pair makes a netns playing the host and one playing the container, joined by a veth,
// and returns the host's handle and end.
func pair(t *testing.T) (netlinksafe.Handle, netlink.Link, ns.NetNS) {
	t.Helper()
	plugintest.RequireRoot(t)
	hostNS := plugintest.Netns(t, "moorbw-h")
	ctrNS := plugintest.Netns(t, "moorbw-c")
	h, nsh, err := plugins.NetlinkAt(hostNS.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); nsh.Close() })
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vhost", MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ctrNS.Fd()))}
	if err := h.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("vhost")
	if err != nil {
		t.Fatal(err)
	}
	return h, link, ctrNS
}

var testLimits = &Limits{IngressRate: 10_000_000, IngressBurst: 400_000, EgressRate: 20_000_000, EgressBurst: 400_000}

func TestApplyCheckAndRollback(t *testing.T) {
	h, dev, _ := pair(t)
	ifb := IfbFor("net1", "ctr1", "eth0")
	undo := plugins.NewUndo(nil)
	if err := Apply(h, dev, testLimits.HostSide(), ifb, undo); err != nil {
		t.Fatal(err)
	}
	if p := Check(h, dev, testLimits.HostSide(), ifb); len(p) != 0 {
		t.Fatalf("fresh shaping: %v", p)
	}
	if got := Read(h, dev, ifb); got == nil || got.IngressRate != testLimits.IngressRate || got.EgressRate != testLimits.EgressRate ||
		got.IngressBurst < testLimits.IngressBurst*99/100 || got.EgressBurst > testLimits.EgressBurst*101/100 {
		t.Errorf("Read: %+v, want about %+v", got, testLimits)
	}
	other := *testLimits
	other.IngressRate = 5_000_000
	if p := Check(h, dev, other.HostSide(), ifb); len(p) != 1 || !strings.Contains(p[0], "rate 10000000 bit/s, want 5000000") {
		t.Errorf("a changed rate: %v", p)
	}
	if _, err := h.LinkByName(ifb.Name); err != nil {
		t.Fatalf("ifb %s: %v", ifb.Name, err)
	}
	if err := undo.Rollback(); err != nil {
		t.Fatal(err)
	}
	qdiscs, err := h.QdiscList(dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qdiscs {
		if q.Type() == "tbf" || q.Type() == "ingress" {
			t.Errorf("rollback left qdisc %s on %s", q.Type(), dev.Attrs().Name)
		}
	}
	if _, err := h.LinkByName(ifb.AltName); err == nil {
		t.Errorf("rollback left ifb %s", ifb.Name)
	}
}

func TestCheckNamesMissingPieces(t *testing.T) {
	h, dev, _ := pair(t)
	ifb := IfbFor("net1", "ctr1", "eth0")
	if err := Apply(h, dev, testLimits.HostSide(), ifb, plugins.NewUndo(nil)); err != nil {
		t.Fatal(err)
	}
	if err := h.QdiscDel(rootTbf(dev.Attrs().Index)); err != nil {
		t.Fatal(err)
	}
	p := Check(h, dev, testLimits.HostSide(), ifb)
	if len(p) != 1 || !strings.Contains(p[0], "tbf qdisc on vhost (ingress shaping) is missing") {
		t.Errorf("deleted root tbf: %v", p)
	}
	if err := Delete(h, ifb); err != nil {
		t.Fatal(err)
	}
	p = Check(h, dev, testLimits.HostSide(), ifb)
	if len(p) != 2 || !strings.Contains(p[1], "ifb "+ifb.Name+" (egress shaping) is missing") {
		t.Errorf("deleted ifb: %v", p)
	}
	if err := Delete(h, ifb); err != nil {
		t.Errorf("deleting nothing: %v", err)
	}
}

func TestBurstUnderMTUIsRefused(t *testing.T) {
	h, dev, _ := pair(t)
	l := &Limits{EgressRate: 1_000_000, EgressBurst: 8 * 1000}
	err := Apply(h, dev, l.HostSide(), IfbFor("n", "c", "eth0"), plugins.NewUndo(nil))
	var ce *codes.Error
	if !errors.As(err, &ce) || ce.Code != codes.InvalidNetworkConfig || !strings.Contains(ce.Msg, "egressBurst") {
		t.Fatalf("got %v, want code 7 naming egressBurst", err)
	}
}

func TestGCKeepsValidAndOtherNetworks(t *testing.T) {
	h, dev, _ := pair(t)
	for _, a := range []struct{ net, ctr string }{{"n1", "keep"}, {"n1", "gone"}, {"n2", "gone"}} {
		// One device can carry one ingress qdisc: create the ifbs alone.
		if _, err := createIfb(h, IfbFor(a.net, a.ctr, "eth0"), dev.Attrs().MTU); err != nil {
			t.Fatal(err)
		}
	}
	if err := GC(h, "n1", []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		net, ctr string
		exists   bool
	}{{"n1", "keep", true}, {"n1", "gone", false}, {"n2", "gone", true}} {
		_, err := h.LinkByName(IfbFor(c.net, c.ctr, "eth0").AltName)
		if (err == nil) != c.exists {
			t.Errorf("ifb of %s/%s: exists %v, want %v", c.net, c.ctr, err == nil, c.exists)
		}
	}
}

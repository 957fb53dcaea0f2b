package hostnet

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// TestGatewayFollowsTheLease: the bridge holds the lease's gateway; when the host's
// subnet changes, the old gateway goes and addresses outside the range stay.
func TestGatewayFollowsTheLease(t *testing.T) {
	n := plugintest.Netns(t, "moorhn")
	h, nsh, err := plugins.NetlinkAt(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { h.Close(); nsh.Close() }()
	br, _, err := bridge.Ensure(h, bridge.Spec{Name: "moorov9", MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	rng := netip.MustParsePrefix("10.240.0.0/16")
	foreign := netip.MustParsePrefix("192.0.2.1/24")
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(foreign)}); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{"10.240.3.1/24", "10.240.3.1/24", "10.240.7.1/24"} {
		if err := ensureGateway(h, br, netip.MustParsePrefix(gw), rng); err != nil {
			t.Fatalf("ensureGateway(%s): %v", gw, err)
		}
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Prefix]bool{}
	for _, a := range addrs {
		p, _ := dataplane.Prefix(a.IPNet)
		got[p] = true
	}
	if len(got) != 2 || !got[netip.MustParsePrefix("10.240.7.1/24")] || !got[foreign] {
		t.Fatalf("bridge addresses %v, want only 10.240.7.1/24 and %s", got, foreign)
	}
}

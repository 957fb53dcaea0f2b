package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

// A network whose bridge holds the kernel's limit of ports (bridge.MaxPorts: one
// container, the rest veth pairs the test puts there) refuses the next container with
// code 112, naming the bridge, the network and the limit, on a /16 that has addresses to
// spare. The refused ADD leaves nothing: no link in the host or the container, no
// reservation (moor-ipam reserves beside the link work), no firewall rule, though it asked
// for a published port. The runtime's DEL of it succeeds; once a port is free the same
// container is attached, with an address of the network.
func TestBridgeFullNetwork(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		const network, brName, subnet = "bfull", "mbfull0", "10.232.0.0/16"
		list := w.network(network, brName, subnet, nil)
		w.attach(list) // the bridge, its gateway and the network's rules exist from here on

		var fillers []string
		plugintest.InNetns(t, w.host, func(h netlinksafe.Handle) error {
			br, err := h.LinkByName(brName)
			if err != nil {
				return err
			}
			fillers, err = plugintest.FillBridge(h, br, "bf")
			return err
		})
		if ports := w.bridgePorts(brName); ports != bridge.MaxPorts || len(fillers) != bridge.MaxPorts-1 {
			t.Fatalf("%s has %d ports (%d put there by the test), want the kernel's limit %d", brName, ports, len(fillers), bridge.MaxPorts)
		}

		ctr := plugintestNetns(t)
		rt := attachment(ctr, "eth0")
		rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18497, "containerPort": 80, "protocol": "tcp"}}}
		before := w.footprint(network, "", ctr)
		_, err := w.rt.add(list, rt)
		wantCode(t, err, codes.BridgeFull, "bridge "+brName)
		for _, want := range []string{fmt.Sprintf("network %q", network), fmt.Sprintf("at most %d ports", bridge.MaxPorts), "another network"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not say %q", err, want)
			}
		}
		if d := before.diff(w.footprint(network, "", ctr)); d != "" {
			t.Errorf("the refused ADD left:\n%s", d)
		}
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL of the refused container: %v", err)
		}
		if d := before.diff(w.footprint(network, "", ctr)); d != "" {
			t.Errorf("DEL of the refused container changed:\n%s", d)
		}

		plugintest.InNetns(t, w.host, func(h netlinksafe.Handle) error {
			return plugins.DeleteLinkByName(h, fillers[0])
		})
		res, err := w.rt.add(list, rt)
		if err != nil {
			t.Fatalf("ADD once a port is free: %v", err)
		}
		_, pool, _ := net.ParseCIDR(subnet)
		if ip := net.ParseIP(ipOf(res)); ip == nil || !pool.Contains(ip) {
			t.Errorf("ADD once a port is free: address %q, want one of %s", ipOf(res), subnet)
		}
		if got, want := len(w.reservations(network)), len(before.Reservations)+1; got != want {
			t.Errorf("%d reservations after the ADD, want %d", got, want)
		}
		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	})
}

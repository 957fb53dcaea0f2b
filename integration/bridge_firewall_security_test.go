package integration

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/firewall"
)

// TestBridgeMoveWithContainersRefused: an ADD of an existing network name with another
// bridge while containers are on the old one is refused with code 7 naming both
// bridges; nothing is left of it and the old bridge stays isolated.
func TestBridgeMoveWithContainersRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("mv", "mbr0", "10.211.0.0/24", nil)
		_, _, res := w.attach(list)
		other, _, _ := w.attach(w.network("mvother", "mbr1", "10.212.0.0/24", nil))
		linksBefore := w.hostLinks()
		_, err := w.rt.add(w.network("mv", "mbr2", "10.211.0.0/24", nil), attachment(plugintestNetns(t), "eth0"))
		wantCode(t, err, 7, "mbr0")
		if !strings.Contains(err.Error(), "mbr2") {
			t.Fatalf("%q does not name the new bridge mbr2", err)
		}
		if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(linksBefore, ",") {
			t.Errorf("refused ADD changed the host's links: %v -> %v", linksBefore, after)
		}
		if r := w.reservations("mv"); len(r) != 1 {
			t.Errorf("reservations after the refused ADD: %v", r)
		}
		if err := ping(other, ipOf(res)); err == nil {
			t.Error("a container of another network reached the old bridge after the refused move")
		}
	})
}

// TestBridgeHostPortInUse: a port a host process listens on is refused with code 103
// naming the port and the process; the refused ADD leaves nothing.
func TestBridgeHostPortInUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		list := w.network("busy", "mbr0", "10.213.0.0/24", nil)
		var ln net.Listener
		if err := w.host.Do(func(ns.NetNS) error {
			var err error
			ln, err = net.Listen("tcp", "127.0.0.1:18090")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		linksBefore := w.hostLinks()
		rt := attachment(plugintestNetns(t), "eth0")
		rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}}}
		_, err := w.rt.add(list, rt)
		wantCode(t, err, 103, "127.0.0.1:18090")
		if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
			t.Errorf("%q does not name the listening process", err)
		}
		if after := w.hostLinks(); strings.Join(after, ",") != strings.Join(linksBefore, ",") {
			t.Errorf("refused ADD changed the host's links: %v -> %v", linksBefore, after)
		}
		if r := w.reservations("busy"); len(r) != 0 {
			t.Errorf("reservations after the refused ADD: %v", r)
		}
	})
}

// TestBridgeMixedBackendsRefused: a network on the other firewall backend than the
// host's moor networks use is refused with code 7 naming both backends.
func TestBridgeMixedBackendsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		w.attach(w.network("first", "mbr0", "10.214.0.0/24", nil))
		otherKind := firewall.KindIPTables
		if w.backend == firewall.KindIPTables {
			otherKind = firewall.KindNFTables
		}
		second := w.network("second", "mbr1", "10.215.0.0/24", map[string]any{"firewallBackend": otherKind})
		ctr := plugintestNetns(t)
		_, err := w.rt.add(second, attachment(ctr, "eth0"))
		wantCode(t, err, 7, w.backend)
		if !strings.Contains(err.Error(), otherKind) {
			t.Fatalf("%q does not name the backend asked for, %s", err, otherKind)
		}
		if r := w.reservations("second"); len(r) != 0 {
			t.Errorf("reservations after the refused ADD: %v", r)
		}
	})
}

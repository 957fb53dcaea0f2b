package wireguard_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/dataplane/planetest"
	"github.com/moornet/moor/overlay/wireguard"
	"github.com/moornet/moor/plugins/plugintest"
)

const testPort = 51820

// wgImpl is the WireGuard plane for the dataplane contract.
type wgImpl struct{}

func device(t *testing.T, h *planetest.Host) wireguard.Device {
	t.Helper()
	k, err := wireguard.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return wireguard.Device{Name: "moorwg9", Port: testPort, Key: k, Gateway: h.Gateway, Underlay: h.Underlay}
}

func peerOf(h *planetest.Host, d wireguard.Device) dataplane.Peer {
	return dataplane.Peer{HostID: h.Name, Subnet: h.Subnet, Gateway: h.Gateway, Underlay: h.Underlay.Addr, Plane: *d.PlaneData()}
}

func (wgImpl) New(t *testing.T, h *planetest.Host) (dataplane.Plane, dataplane.Peer) {
	d := device(t, h)
	return wireguard.New(h.H, h.NS, d), peerOf(h, d)
}

func (wgImpl) Ghost(id string, subnet netip.Prefix, underlay netip.Addr) dataplane.Peer {
	k, _ := wireguard.GenerateKey()
	d := wireguard.Device{Port: testPort, Key: k, Underlay: dataplane.Underlay{Addr: underlay}}
	return dataplane.Peer{HostID: id, Subnet: subnet, Gateway: subnet.Addr().Next(), Underlay: underlay, Plane: *d.PlaneData()}
}

func TestContract(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	planetest.Run(t, wgImpl{}, "192.168.243")
}

// testHost is one host with its ensured plane and bridge.
type testHost struct {
	*planetest.Host
	dev   wireguard.Device
	plane *wireguard.Plane
}

func (h *testHost) peer() dataplane.Peer { return peerOf(h.Host, h.dev) }

func pair(t *testing.T, underlay string) (*testHost, *testHost) {
	t.Helper()
	a, b := planetest.Pair(t, underlay)
	var out []*testHost
	for _, h := range []*planetest.Host{a, b} {
		th := &testHost{Host: h, dev: device(t, h)}
		th.plane = wireguard.New(h.H, h.NS, th.dev)
		if _, err := th.plane.Ensure(); err != nil {
			t.Fatal(err)
		}
		h.Bridge(t, th.plane.LinkMTU())
		out = append(out, th)
	}
	return out[0], out[1]
}

// TestMTUAndFullSizePacket: the device, bridge and containers get the underlay's MTU
// minus 60, and a packet of exactly that size crosses with "do not fragment" set, while
// one byte more does not leave the container.
func TestMTUAndFullSizePacket(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	a, b := pair(t, "192.168.244")
	if got := a.plane.LinkMTU(); got != 1500-60 {
		t.Fatalf("LinkMTU %d, want 1440", got)
	}
	if err := a.plane.Apply(b.peer()); err != nil {
		t.Fatal(err)
	}
	if err := b.plane.Apply(a.peer()); err != nil {
		t.Fatal(err)
	}
	ca, _ := a.Container(t, 0)
	_, ipB := b.Container(t, 0)
	payload := 1440 - 28 // IPv4 and ICMP headers
	if err := planetest.PingDF(ca, ipB, payload); err != nil {
		t.Fatalf("a full-size packet does not cross: %v", err)
	}
	if err := planetest.PingDF(ca, ipB, payload+1); err == nil {
		t.Fatal("a packet larger than the MTU crossed with DF set")
	}
}

// TestWrongKeyGetsNoTraffic: b's lease publishes a key that is not b's: a writes the peer,
// nothing crosses, and Sessions shows no handshake with b (what status reports).
func TestWrongKeyGetsNoTraffic(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	a, b := pair(t, "192.168.245")
	wrong := b.peer()
	k, _ := wireguard.GenerateKey()
	wrong.Plane.PublicKey = k.Public().String()
	if err := a.plane.Apply(wrong); err != nil {
		t.Fatal(err)
	}
	if err := b.plane.Apply(a.peer()); err != nil {
		t.Fatal(err)
	}
	ca, _ := a.Container(t, 0)
	_, ipB := b.Container(t, 0)
	if err := planetest.Ping(ca, ipB); err == nil {
		t.Fatal("traffic crossed to a host whose lease carries a wrong key")
	}
	st, err := a.plane.Sessions([]dataplane.Peer{wrong})
	if err != nil || len(st) != 1 || !st[0].Present || !st[0].LastHandshake.IsZero() {
		t.Fatalf("sessions %+v, %v; want b present without a handshake", st, err)
	}
	problems, err := a.plane.Probe([]dataplane.Peer{wrong})
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0], b.Name) || !strings.Contains(problems[0], "handshake") {
		t.Fatalf("Probe with a wrong key: %q, %v; want b named with the missing handshake", problems, err)
	}
	// The right key: Sync replaces the peer and traffic flows.
	if rep, err := a.plane.Sync([]dataplane.Peer{b.peer()}); err != nil || rep.Removed == 0 || rep.Repaired == 0 {
		t.Fatalf("Sync with b's real key: %+v, %v", rep, err)
	}
	if err := planetest.Ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.plane.Sessions([]dataplane.Peer{b.peer()}); st[0].LastHandshake.IsZero() {
		t.Fatal("no handshake after traffic flowed")
	}
	if problems, err := a.plane.Probe([]dataplane.Peer{b.peer()}); err != nil || len(problems) != 0 {
		t.Fatalf("Probe with the right key: %q, %v", problems, err)
	}
}

// TestRotationConverges: b rotates its key (new key on its device, new key in its lease);
// a's Sync drops the old peer and writes the new one, and traffic flows again.
func TestRotationConverges(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	a, b := pair(t, "192.168.246")
	_ = a.plane.Apply(b.peer())
	_ = b.plane.Apply(a.peer())
	ca, _ := a.Container(t, 0)
	_, ipB := b.Container(t, 0)
	if err := planetest.Ping(ca, ipB); err != nil {
		t.Fatal(err)
	}
	old := b.peer()
	k, _ := wireguard.GenerateKey()
	b.dev.Key = k
	b.plane = wireguard.New(b.H, b.NS, b.dev)
	if _, err := b.plane.Ensure(); err != nil {
		t.Fatal(err)
	}
	rep, err := a.plane.Sync([]dataplane.Peer{b.peer()})
	if err != nil || rep.Removed != 1 || rep.Repaired != 1 {
		t.Fatalf("Sync after b's rotation: %+v, %v; want the old peer removed and the new one written", rep, err)
	}
	if missing, _ := a.plane.Missing([]dataplane.Peer{old}); len(missing) == 0 || !strings.Contains(strings.Join(missing, ";"), old.Plane.PublicKey) {
		t.Fatalf("the old key is still a peer: missing %v", missing)
	}
	deadline := time.Now().Add(20 * time.Second) // a's session with the old key may take a retry
	for planetest.Ping(ca, ipB) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no traffic after the rotation")
		}
	}
}

// TestPeerWithoutKeyIsNamed: a lease without WireGuard data is an error naming the host.
func TestPeerWithoutKeyIsNamed(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	a, b := pair(t, "192.168.247")
	p := b.peer()
	p.Plane.Type, p.Plane.PublicKey = "vxlan", ""
	if err := a.plane.Apply(p); err == nil || !strings.Contains(err.Error(), b.Name) {
		t.Fatalf("Apply of a peer without a key: %v", err)
	}
	if _, err := a.plane.Sync([]dataplane.Peer{p}); err == nil || !strings.Contains(err.Error(), b.Name) {
		t.Fatalf("Sync with a peer without a key: %v", err)
	}
}

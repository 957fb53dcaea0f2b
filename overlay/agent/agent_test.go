package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/masq"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
	"github.com/moornet/moor/plugins/plugintest"
)

const waitBound = 20 * time.Second

// hostPair makes two host namespaces joined by a veth (eth0 in each).
func hostPair(t *testing.T) (ns.NetNS, ns.NetNS) {
	t.Helper()
	a, b := plugintest.Netns(t, "moorag"), plugintest.Netns(t, "moorag")
	ha, nsa, err := plugins.NetlinkAt(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsa.Close()
	defer ha.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(b.Fd()))}); err != nil {
		t.Fatal(err)
	}
	for i, n := range []ns.NetNS{a, b} {
		h, nsh, err := plugins.NetlinkAt(n.Path())
		if err != nil {
			t.Fatal(err)
		}
		l, _ := h.LinkByName("eth0")
		addr, _ := netlink.ParseAddr(fmt.Sprintf("192.168.240.%d/24", i+1))
		if err := h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		h.Close()
		nsh.Close()
	}
	return a, b
}

type running struct {
	socket string
	done   chan error
	stop   context.CancelFunc
}

func startAgent(t *testing.T, host ns.NetNS, id, endpoint string) *running {
	t.Helper()
	return startAgentResync(t, host, id, endpoint, 300*time.Millisecond)
}

// startAgentResync starts an agent whose full resync runs every resync.
func startAgentResync(t *testing.T, host ns.NetNS, id, endpoint string, resync time.Duration) *running {
	t.Helper()
	return startAgentWith(t, host, id, resync, map[string]string{"ov": fmt.Sprintf(`{"type":"moor-overlay","subnet":"10.245.0.0/16","vni":7,
		"underlay":"eth0","ipMasq":true,"leaseTTL":"3s","store":{"endpoints":[%q],"prefix":"/agenttest"}}`, endpoint)})
}

// startAgentWith starts an agent serving the networks given (name: plugin config) and
// waits until every one is synced.
func startAgentWith(t *testing.T, host ns.NetNS, id string, resync time.Duration, confs map[string]string) *running {
	t.Helper()
	dir, err := os.MkdirTemp("", "moorag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cs []*netconf.Conf
	for name, conf := range confs {
		c, err := netconf.Parse([]byte(conf), name, "1.1.0")
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	r := &running{socket: filepath.Join(dir, "agent.sock"), done: make(chan error, 1)}
	a, err := agent.New(agent.Options{Configs: cs, HostID: id, Listen: r.socket, Resync: resync,
		Netns: host.Path(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	wait(t, "agent "+id+" healthy", func() bool { return agent.Healthy(r.socket, "") })
	return r
}

func wait(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func peers(t *testing.T, socket string) int {
	t.Helper()
	st, err := agent.FetchStatus(socket)
	if err != nil || len(st.Networks) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	return len(st.Networks[0].Peers)
}

func fdbCount(t *testing.T, host ns.NetNS) int {
	t.Helper()
	h, nsh, err := plugins.NetlinkAt(host.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	vx, err := h.LinkByName("moorvx7")
	if err != nil {
		return -1
	}
	entries, err := h.NeighList(0, unix.AF_BRIDGE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.LinkIndex == vx.Attrs().Index {
			n++
		}
	}
	return n
}

// TestAgentsJoinRepairAndLeave runs two agents in process, each on its own host namespace:
// they see each other, a stale FDB entry is removed and counted as drift, and a leave
// removes the host everywhere.
func TestAgentsJoinRepairAndLeave(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	a, b := hostPair(t)
	ra := startAgent(t, a, "host-a", srv.Endpoint)
	rb := startAgent(t, b, "host-b", srv.Endpoint)
	wait(t, "both agents see each other", func() bool { return peers(t, ra.socket) == 1 && peers(t, rb.socket) == 1 })
	wait(t, "one FDB entry on host a", func() bool { return fdbCount(t, a) == 1 })
	checkClearStatus(t, ra.socket, rb.socket)
	if ok, err := masq.Present(int(a.Fd()), masq.Rule{Network: "ov", HostSubnet: mustPrefix(t, ra.socket), Range: mustParse("10.245.0.0/16")}); !ok || err != nil {
		t.Fatalf("host a has no masquerade rule: %v", err)
	}
	var forward []byte
	_ = a.Do(func(ns.NetNS) error {
		forward, _ = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return nil
	})
	if strings.TrimSpace(string(forward)) != "1" {
		t.Fatalf("ip_forward in host a is %q", forward)
	}

	// Drift: a stale FDB entry on host a.
	h, nsh, err := plugins.NetlinkAt(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	defer h.Close()
	vx, _ := h.LinkByName("moorvx7")
	stale := &netlink.Neigh{LinkIndex: vx.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: net.ParseIP("192.168.240.99"), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}}
	if err := h.NeighSet(stale); err != nil {
		t.Fatal(err)
	}
	wait(t, "the stale FDB entry removed", func() bool { return fdbCount(t, a) == 1 })
	metrics, err := agent.FetchMetrics(ra.socket)
	if err != nil || !strings.Contains(metrics, `moor_overlay_drift_entries_total{network="ov"} 1`) {
		t.Fatalf("metrics after drift (%v):\n%s", err, metrics)
	}

	// Leave: host b's agent releases, removes its VXLAN device and stops.
	if err := agent.RequestLeave(rb.socket); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-rb.done:
		if !errors.Is(err, agent.ErrLeft) {
			t.Fatalf("agent b returned %v, want ErrLeft", err)
		}
		rb.done <- err // for the cleanup
	case <-time.After(waitBound):
		t.Fatal("agent b did not stop after leaving")
	}
	if fdbCount(t, b) != -1 {
		t.Fatal("host b kept its VXLAN device after leaving")
	}
	wait(t, "host a dropped host b", func() bool { return peers(t, ra.socket) == 0 && fdbCount(t, a) == 0 })
	if agent.Running(rb.socket) {
		t.Fatal("agent b still answers after leaving")
	}
}

func mustPrefix(t *testing.T, socket string) netip.Prefix {
	t.Helper()
	st, err := agent.FetchStatus(socket)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(st.Networks[0].Subnet)
}

func mustParse(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// checkClearStatus: a clear network's /status is VXLAN-shaped: plane "vxlan", this host's
// VTEP MAC, each peer with the VTEP MAC that peer reports for itself, and no WireGuard
// fields.
func checkClearStatus(t *testing.T, socket, peerSocket string) {
	t.Helper()
	st, err := agent.FetchStatus(socket)
	if err != nil || len(st.Networks) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	other, err := agent.FetchStatus(peerSocket)
	if err != nil || len(other.Networks) != 1 {
		t.Fatalf("peer status: %+v %v", other, err)
	}
	n, o := st.Networks[0], other.Networks[0]
	if n.Plane != "vxlan" || n.VTEPMAC == "" || n.PublicKey != "" || n.Endpoint != "" {
		t.Fatalf("clear network status %+v, want plane vxlan with a VTEP MAC and no WireGuard fields", n)
	}
	if len(n.Peers) != 1 || n.Peers[0].HostID != o.HostID || n.Peers[0].VTEPMAC != o.VTEPMAC || n.Peers[0].WireGuard != nil {
		t.Fatalf("peers %+v, want %s with VTEP MAC %s and no WireGuard section", n.Peers, o.HostID, o.VTEPMAC)
	}
}

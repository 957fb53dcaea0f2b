package integration

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/overlay/agent"
)

// lab3 is three hosts with two containers each on one overlay network with DNS and
// masquerade. The lease TTL is short so that the silent-host step reclaims quickly.
const lab3 = `
underlay: 172.31.7.0/24
agent: {resync: 2s}
networks:
  - {name: ov, subnet: 10.240.0.0/16, hostSubnetLen: 24, vni: 42, dns: true, ipMasq: true, leaseTTL: 4s}
hosts:
  - {name: h1, containers: [web1, db1]}
  - {name: h2, containers: [web2, db2]}
  - {name: h3, containers: [web3, db3]}
`

// TestOverlayLab runs one three-host lab through its life: containers on different hosts
// reach each other by address and by name; etcd restarts; a host restarts and gets its
// subnet and MAC back; a host leaves; a host falls silent and is reclaimed. After each
// step every host holds exactly the entries the leases call for (read with ip/bridge).
func TestOverlayLab(t *testing.T) {
	l := upLab(t, lab3)
	ctx := context.Background()
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ReachByAddressAndName", func(t *testing.T) {
			waitConverged(t, l, "h1", "h2", "h3")
			s := l.Status(ctx, true)
			if !s.Reachable() || len(s.Names) != 6 {
				t.Fatalf("connectivity matrix:\n%v", s.Matrix)
			}
			for _, row := range s.Matrix {
				for _, cell := range row {
					if cell != lab.CellOK && cell != lab.CellSelf {
						t.Fatalf("connectivity matrix has %q:\n%v", cell, s.Matrix)
					}
				}
			}
			// Masquerade: the lab's router knows no overlay route; only a masqueraded
			// container reaches it. And the host reaches remote containers itself.
			if err := l.Ping("web1", netip.MustParseAddr(l.Router)); err != nil {
				t.Fatalf("ipMasq: %v", err)
			}
			web3, _ := l.Container("web3")
			if err := l.PingFromHost("h1", netip.MustParseAddr(web3.Attachments[0].IP)); err != nil {
				t.Fatalf("host h1 to web3: %v", err)
			}
		}},
		{"DriftRepaired", func(t *testing.T) {
			// A stale FDB entry and a lost neighbour on h1: the periodic resync deletes the
			// one, restores the other, and counts both in the agent's metrics.
			h1, _ := l.Host("h1")
			h2lease, _ := leaseOf(leases(t, l), l.Name+"-h2")
			for _, cmd := range [][]string{
				{"bridge", "fdb", "add", "02:00:00:00:00:99", "dev", ovVXLAN, "dst", "172.31.7.99", "self", "permanent"},
				{"ip", "neigh", "del", h2lease.Gateway().String(), "dev", ovVXLAN},
			} {
				if err := execIn(h1.Netns, cmd...); err != nil {
					t.Fatal(err)
				}
			}
			waitConverged(t, l, "h1", "h2", "h3")
			metrics, err := agent.FetchMetrics(h1.AgentEndpoint())
			if err != nil {
				t.Fatal(err)
			}
			drift := metricValue(metrics, `moor_overlay_drift_entries_total{network="ov"}`)
			if drift < 2 || metricValue(metrics, `moor_overlay_peers{network="ov"}`) != 2 {
				t.Fatalf("metrics after drift:\n%s", metrics)
			}
			mustReach(t, l, "web1", "web2", true)
		}},
		{"EtcdRestart", func(t *testing.T) {
			l.StopEtcd()
			mustReach(t, l, "web1", "db2", false) // the data plane keeps working without etcd
			if err := l.StartEtcd(ctx); err != nil {
				t.Fatal(err)
			}
			// Without any manual step: a new container on h2 is reachable by name from h1
			// and h3, and the agents are healthy again.
			if _, err := l.AddContainer(ctx, "h2", lab.ContainerSpec{Name: "late"}); err != nil {
				t.Fatal(err)
			}
			mustReach(t, l, "web1", "late", true)
			mustReach(t, l, "late", "db3", true)
			for _, h := range []string{"h1", "h2", "h3"} {
				host, _ := l.Host(h)
				waitHealthy(t, host)
			}
			if err := l.RemoveContainer(ctx, "late"); err != nil {
				t.Fatal(err)
			}
			waitConverged(t, l, "h1", "h2", "h3")
		}},
		{"HostRestart", func(t *testing.T) {
			h2, _ := l.Host("h2")
			before, ok := leaseOf(leases(t, l), h2.HostID)
			if !ok {
				t.Fatal("h2 holds no lease")
			}
			if err := l.RestartHost(ctx, "h2"); err != nil {
				t.Fatal(err)
			}
			ls := waitConverged(t, l, "h1", "h2", "h3")
			after, _ := leaseOf(ls, h2.HostID)
			if after.Subnet != before.Subnet || after.VTEPMAC.String() != before.VTEPMAC.String() {
				t.Fatalf("after restart h2 holds %s %s, before %s %s", after.Subnet, after.VTEPMAC, before.Subnet, before.VTEPMAC)
			}
			rows, err := ipJSON(h2.Netns, "link", "show", ovVXLAN)
			if err != nil || len(rows) != 1 || rows[0]["address"] != before.VTEPMAC.String() {
				t.Fatalf("h2's re-made VXLAN device: %v %v, want MAC %s", rows, err, before.VTEPMAC)
			}
			mustReach(t, l, "web1", "web2", true)
			mustReach(t, l, "db2", "db3", true)
			mustReach(t, l, "web3", "db2", true)
		}},
		{"HostLeaves", func(t *testing.T) {
			if err := l.LeaveHost(ctx, "h3"); err != nil {
				t.Fatal(err)
			}
			waitConverged(t, l, "h1", "h2")
			h3, _ := l.Host("h3")
			for _, name := range links(t, h3.Netns) {
				if name == ovVXLAN {
					t.Fatal("h3 kept its VXLAN device after leaving")
				}
			}
			if k, _ := readKernel(h3.Netns); len(k.Routes) != 0 {
				t.Fatalf("h3 kept routes after leaving: %v", k.Routes)
			}
			mustReach(t, l, "web1", "db2", true)
		}},
		{"SilentHostReclaimed", func(t *testing.T) {
			h2, _ := l.Host("h2")
			h2.Agent.Kill() // a crash: no leave; the heartbeat expires after the lease TTL
			waitConverged(t, l, "h1")
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return // later steps build on this one
		}
	}
}

// metricValue reads one sample of a Prometheus text exposition (-1 when absent).
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// waitHealthy waits for a host's agent to report every network synced.
func waitHealthy(t *testing.T, h *lab.Host) {
	t.Helper()
	err := waitUntil(ovConverge, func() bool { return agent.Healthy(h.AgentEndpoint(), "") })
	if err != nil {
		st, _ := agent.FetchStatus(h.AgentEndpoint())
		t.Fatalf("agent of %s not healthy: %+v", h.Name, st)
	}
}

package agent_test

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/masq"
	"github.com/moornet/moor/plugins/etcdclient/etcdtest"
	"github.com/moornet/moor/plugins/plugintest"
)

// seenAs is the source address the server at addr (plugintest.ServeTCP) saw from a
// connection out of from, or "unreachable".
func seenAs(from ns.NetNS, addr string) string {
	src, err := plugintest.DialTCP(from, addr, 500*time.Millisecond)
	if err != nil {
		return "unreachable"
	}
	return src
}

// nft runs nft in n.
func nft(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(n.Path()), "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v: %s", args, err, out)
	}
	return string(out)
}

func firewallRepairs(t *testing.T, socket string) int64 {
	t.Helper()
	st, err := agent.FetchStatus(socket)
	if err != nil || len(st.Networks) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	return st.Networks[0].FirewallRepairs
}

// TestAgentRepairsFlushedMasquerade: a container behind the overlay bridge of a host
// namespace reaches an outside address through the masquerade; after `nft flush ruleset`
// (ten times in a row) and after `nft delete table ip moor-overlay` the agent puts the
// masquerade back from its lease, the container reaches the outside again, the chain holds
// one rule, the repairs are counted in /status and /metrics, and an operator's table is
// left as it was. The time to repair is logged, not asserted; the resync is far slower
// than the deadline-free wait so the events are what repairs.
func TestAgentRepairsFlushedMasquerade(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	host, _ := hostPair(t)
	ra := startAgentResync(t, host, "host-a", srv.Endpoint, time.Hour)
	subnet := mustPrefix(t, ra.socket)
	gw := subnet.Addr().Next()
	ctrAddr := gw.Next().Next()
	ctr, outside := plugintest.Netns(t, "moorfw"), plugintest.Netns(t, "moorfw")
	plugintest.Veth(t, host, ctr, plugintest.VethSpec{HostName: "vctr", Master: "moorov7",
		PeerAddr: netip.PrefixFrom(ctrAddr, subnet.Bits()).String(), Gateway: gw.String()})
	plugintest.Veth(t, host, outside, plugintest.VethSpec{HostName: "vout", HostAddr: "192.168.9.1/24", PeerAddr: "192.168.9.2/24"})
	plugintest.ServeTCP(t, outside, "192.168.9.2:7000")

	works := func() bool { return seenAs(ctr, "192.168.9.2:7000") == "192.168.9.1" }
	wait(t, "masquerade from the container", works)

	nft(t, host, "add", "table", "inet", "operator")
	nft(t, host, "add", "chain", "inet", "operator", "input", "{ type filter hook input priority 0; policy accept; }")
	nft(t, host, "add", "rule", "inet", "operator", "input", "tcp", "dport", "9999", "counter", "accept", "comment", `"operator's"`)
	operator := nft(t, host, "list", "table", "inet", "operator")

	// Only moor-overlay's table goes: it comes back, the operator's table is untouched.
	before := firewallRepairs(t, ra.socket)
	start := time.Now()
	nft(t, host, "delete", "table", "ip", masq.TableName)
	wait(t, "masquerade after the table's deletion", works)
	t.Logf("masquerade back %v after the table's deletion", time.Since(start))
	if got := nft(t, host, "list", "table", "inet", "operator"); got != operator {
		t.Fatalf("operator's table changed by the repair:\n%s\nwas:\n%s", got, operator)
	}
	if firewallRepairs(t, ra.socket) <= before {
		t.Fatal("/status counted no firewall repair after the table's deletion")
	}

	for i := range 10 {
		before = firewallRepairs(t, ra.socket)
		start = time.Now()
		nft(t, host, "flush", "ruleset")
		wait(t, "a firewall repair counted after a flush", func() bool { return firewallRepairs(t, ra.socket) > before })
		wait(t, "masquerade after a flush", works)
		t.Logf("flush %d: masquerade back %v after the flush", i+1, time.Since(start))
	}
	chain := nft(t, host, "list", "chain", "ip", masq.TableName, masq.ChainName)
	if n := strings.Count(chain, "masquerade"); n != 1 {
		t.Fatalf("%d masquerade rules after ten flushes, want 1:\n%s", n, chain)
	}
	st, err := agent.FetchStatus(ra.socket)
	if err != nil || !st.FirewallEvents || st.Networks[0].LastFirewallRepair == "" {
		t.Fatalf("status %+v (%v): want nftables events watched and a last repair", st, err)
	}
	m, err := agent.FetchMetrics(ra.socket)
	if err != nil || !strings.Contains(m, fmt.Sprintf(`moor_overlay_firewall_repairs_total{network="ov"} %d`, st.Networks[0].FirewallRepairs)) {
		t.Fatalf("metrics (%v) do not count %d firewall repairs:\n%s", err, st.Networks[0].FirewallRepairs, m)
	}
}

// TestAgentRepairsMasqueradeAtResync: without nftables events, the periodic resync puts
// the masquerade back after a flush, once, and counts it.
func TestAgentRepairsMasqueradeAtResync(t *testing.T) {
	agent.SetFirewallEvents(false)
	t.Cleanup(func() { agent.SetFirewallEvents(true) })
	srv := etcdtest.Start(t, etcdtest.Options{})
	host, _ := hostPair(t)
	ra := startAgent(t, host, "host-a", srv.Endpoint)
	start := time.Now()
	nft(t, host, "flush", "ruleset")
	wait(t, "a firewall repair at a resync", func() bool { return firewallRepairs(t, ra.socket) > 0 })
	t.Logf("masquerade back %v after the flush", time.Since(start))
	chain := nft(t, host, "list", "chain", "ip", masq.TableName, masq.ChainName)
	if n := strings.Count(chain, "masquerade"); n != 1 {
		t.Fatalf("%d masquerade rules after the resync's repair, want 1:\n%s", n, chain)
	}
	if st, err := agent.FetchStatus(ra.socket); err != nil || st.FirewallEvents {
		t.Fatalf("status %+v (%v): want nftables events not watched", st, err)
	}
}

// TestAgentRepairsICCAndInternal: the forward rules of an icc false network and of an
// internal network come back after `nft flush ruleset`, once each after ten flushes, and
// each network counts its repair.
func TestAgentRepairsICCAndInternal(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	host, _ := hostPair(t)
	conf := func(subnet string, vni int, opts string) string {
		return fmt.Sprintf(`{"type":"moor-overlay","subnet":%q,"vni":%d,"underlay":"eth0",%s,"leaseTTL":"3s",
			"store":{"endpoints":[%q],"prefix":"/agenttest"}}`, subnet, vni, opts, srv.Endpoint)
	}
	ra := startAgentWith(t, host, "host-a", time.Hour, map[string]string{
		"noicc": conf("10.246.0.0/16", 8, `"icc":false,"ipMasq":true`),
		"inner": conf("10.247.0.0/16", 9, `"internal":true`),
	})
	fd := int(host.Fd())
	icc := masq.NoICC{Network: "noicc", Bridge: "moorov8", Range: netip.MustParsePrefix("10.246.0.0/16")}
	internal := masq.Internal{Network: "inner", Bridge: "moorov9", Range: netip.MustParsePrefix("10.247.0.0/16")}
	inPlace := func() bool {
		a, errA := masq.PresentNoICC(fd, icc)
		b, errB := masq.PresentInternal(fd, internal)
		return a && b && errA == nil && errB == nil
	}
	if !inPlace() {
		t.Fatal("the icc and internal rules are not in place after the agent's start")
	}
	for i := range 10 {
		start := time.Now()
		nft(t, host, "flush", "ruleset")
		wait(t, "icc and internal rules after a flush", inPlace)
		t.Logf("flush %d: rules back %v after the flush", i+1, time.Since(start))
	}
	st, err := agent.FetchStatus(ra.socket)
	if err != nil || len(st.Networks) != 2 {
		t.Fatalf("status %+v (%v)", st, err)
	}
	for _, n := range st.Networks {
		if n.FirewallRepairs == 0 {
			t.Errorf("network %s counted no firewall repair: %+v", n.Name, n)
		}
	}
}

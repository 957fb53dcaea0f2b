package runtimes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// netnsPrefix names the network namespaces this package creates (cnitool's containers).
const netnsPrefix = "moorrt"

// runtimeNetnsPrefixes are how podman 4 ("netns-<uuid>") and containerd ("cni-<uuid>")
// name the namespaces they create.
var runtimeNetnsPrefixes = []string{"netns-", "cni-"}

// watchedSysctls are host settings moor or the runtimes may change; the ones that differ
// at the end of a scenario are put back before the comparison.
var watchedSysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv6/conf/all/forwarding",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
}

// hostState is what a scenario must leave as it found in the machine's own network
// namespace: links, addresses, routes (every table), policy rules, the firewall
// (nftables ruleset and iptables-save), the watched sysctls, and the network namespaces
// named like the runtimes' or this package's.
type hostState struct {
	Links, Addrs, Routes, Rules, Netns []string
	NFT, IPT                           string
	Sysctls                            map[string]string
}

func takeHostState() (hostState, error) {
	var s hostState
	links, err := netlinksafe.LinkList()
	if err != nil {
		return s, fmt.Errorf("listing links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		a := l.Attrs()
		s.Links = append(s.Links, fmt.Sprintf("%s type=%s master=%s", a.Name, l.Type(), names[a.MasterIndex]))
	}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return s, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, fmt.Sprintf("%s %s", names[a.LinkIndex], a.IPNet))
	}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return s, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		s.Routes = append(s.Routes, fmt.Sprintf("table=%d dst=%v gw=%v dev=%s src=%v scope=%d type=%d proto=%d metric=%d",
			r.Table, r.Dst, r.Gw, names[r.LinkIndex], r.Src, r.Scope, r.Type, r.Protocol, r.Priority))
	}
	rules, err := netlinksafe.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return s, fmt.Errorf("listing rules: %w", err)
	}
	for _, r := range rules {
		s.Rules = append(s.Rules, fmt.Sprintf("family=%d prio=%d table=%d src=%v dst=%v iif=%s oif=%s mark=%d", r.Family, r.Priority, r.Table, r.Src, r.Dst, r.IifName, r.OifName, r.Mark))
	}
	entries, err := os.ReadDir(plugintest.NetnsDir)
	if err != nil && !os.IsNotExist(err) {
		return s, err
	}
	for _, e := range entries {
		for _, p := range append(runtimeNetnsPrefixes, netnsPrefix) {
			if strings.HasPrefix(e.Name(), p) {
				s.Netns = append(s.Netns, e.Name())
				break
			}
		}
	}
	if s.NFT, err = firewallDump("nft", "list", "ruleset"); err != nil {
		return s, err
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := firewallDump(save)
		if err != nil {
			return s, err
		}
		s.IPT += out
	}
	s.Sysctls = map[string]string{}
	for _, k := range watchedSysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(v))
		}
	}
	for _, l := range [][]string{s.Links, s.Addrs, s.Routes, s.Rules, s.Netns} {
		sort.Strings(l)
	}
	return s, nil
}

// counters are the packet/byte counters iptables-save prints on chain lines.
var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// firewallDump runs a ruleset dump; a missing tool dumps nothing. Comment lines (the
// timestamps of iptables-save) and counters are dropped.
func firewallDump(tool string, args ...string) (string, error) {
	path, err := exec.LookPath(tool)
	if err != nil {
		return "", nil
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", tool, err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, counters.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(lines, "\n"), nil
}

// diff lists, one per line, what differs from before to after.
func (before hostState) diff(after hostState) []string {
	var out []string
	lists := []struct {
		what      string
		old, news []string
	}{
		{"link", before.Links, after.Links},
		{"address", before.Addrs, after.Addrs},
		{"route", before.Routes, after.Routes},
		{"rule", before.Rules, after.Rules},
		{"netns", before.Netns, after.Netns},
		{"nftables", strings.Split(before.NFT, "\n"), strings.Split(after.NFT, "\n")},
		{"iptables", strings.Split(before.IPT, "\n"), strings.Split(after.IPT, "\n")},
	}
	for _, l := range lists {
		out = append(out, setDiff(l.what, l.old, l.news)...)
	}
	for k, v := range before.Sysctls {
		if after.Sysctls[k] != v {
			out = append(out, fmt.Sprintf("sysctl %s: %s, was %s", k, after.Sysctls[k], v))
		}
	}
	return out
}

// setDiff reports the lines only in old (gone) and only in news (left).
func setDiff(what string, old, news []string) []string {
	count := map[string]int{}
	for _, s := range old {
		count[s]--
	}
	for _, s := range news {
		count[s]++
	}
	var out []string
	for s, n := range count {
		switch {
		case n > 0:
			out = append(out, fmt.Sprintf("%s left: %s", what, s))
		case n < 0:
			out = append(out, fmt.Sprintf("%s gone: %s", what, s))
		}
	}
	sort.Strings(out)
	return out
}

// watchHost snapshots the host now and, when the test ends (after every cleanup
// registered later: containers, networks), puts the watched sysctls back and fails the
// test if anything else differs.
func watchHost(t *testing.T) {
	t.Helper()
	needSuite(t)
	before, err := takeHostState()
	if err != nil {
		t.Fatalf("host snapshot: %v", err)
	}
	t.Cleanup(func() {
		for k, v := range before.Sysctls {
			p := filepath.Join("/proc/sys", k)
			if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) != v {
				if err := os.WriteFile(p, []byte(v), fileMode); err != nil {
					t.Errorf("restoring sysctl %s=%s: %v", k, v, err)
				}
			}
		}
		removeOperatorChains(t, before)
		after, err := takeHostState()
		if err != nil {
			t.Errorf("host snapshot after the test: %v", err)
			return
		}
		if d := before.diff(after); len(d) > 0 {
			t.Errorf("the host differs after the test:\n%s", strings.Join(d, "\n"))
		}
	})
}

// removeOperatorChains deletes the operator's firewall chains (firewall.UserTable and
// firewall.IPTUserChain) when the test's runtimes made them: moor creates them on a host's
// first network and never deletes them (they hold the operator's own rules), so in the
// machine's own namespace a test that found none removes them again, leaving the machine's
// firewall as it was. One that existed before the test is left alone.
func removeOperatorChains(t *testing.T, before hostState) {
	t.Helper()
	if !strings.Contains(before.NFT, "table inet "+firewall.UserTable+" ") {
		if exec.Command("nft", "list", "table", "inet", firewall.UserTable).Run() == nil {
			if out, err := exec.Command("nft", "delete", "table", "inet", firewall.UserTable).CombinedOutput(); err != nil {
				t.Errorf("removing the operator table: %v: %s", err, out)
			}
		}
	}
	if strings.Contains(before.IPT, firewall.IPTUserChain) {
		return
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if exec.Command(tool, "-w", "-t", "filter", "-n", "-L", firewall.IPTUserChain).Run() != nil {
			continue
		}
		_ = exec.Command(tool, "-w", "-t", "filter", "-F", firewall.IPTUserChain).Run()
		if out, err := exec.Command(tool, "-w", "-t", "filter", "-X", firewall.IPTUserChain).CombinedOutput(); err != nil {
			t.Errorf("removing %s %s: %v: %s", tool, firewall.IPTUserChain, err, out)
		}
	}
}

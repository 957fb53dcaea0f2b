package integration

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// quietWait is how long an IPv4-only container is watched for IPv6 it must not send:
// a link-local address would have sent its MLD report at once and its duplicate address
// detection within rtr_solicit_delay (1 s) of the link going up.
const quietWait = 2 * time.Second

// sentWait bounds the wait for the IPv6 a container of an IPv6 network does send.
const sentWait = 20 * time.Second

// The container interface of an IPv4-only network has IPv6 off from before it went up:
// disable_ipv6 is 1, it has no IPv6 address (not even fe80::), and its netns sends no
// IPv6 at all; on a dual-stack or IPv6-only network it keeps IPv6 (link-local and IPAM's
// address, and it sends the kernel's link-local traffic, which shows that the counters
// read would see it), and IPv6 flows. For moor-bridge (to the gateway on the bridge) and
// moor-macvlan (between two containers).
func TestContainerIPv6FollowsTheNetwork(t *testing.T) {
	families := []struct {
		name    string
		subnets []string
	}{
		{"v4", []string{"10.216.0.0/24"}},
		{"v6", []string{"fd16::/64"}},
		{"dual", []string{"10.217.0.0/24", "fd17::/64"}},
	}
	ranges := func(dataDir string, subnets []string) map[string]any {
		var rs []any
		for _, s := range subnets {
			rs = append(rs, []any{map[string]any{"subnet": s}})
		}
		return map[string]any{"type": "moor-ipam", "dataDir": dataDir, "ranges": rs}
	}
	t.Run("bridge", func(t *testing.T) {
		w := newWorld(t, "nftables")
		for i, tc := range families {
			t.Run(tc.name, func(t *testing.T) {
				list := w.network("v6off"+tc.name, fmt.Sprintf("mb6o%d", i), "", map[string]any{"ipam": ranges(w.dataDir, tc.subnets)})
				ctr, _, res := w.attach(list)
				checkIPv6State(t, ctr, res)
				for _, ipc := range res.IPs {
					if err := ping(ctr, ipc.Gateway.String()); err != nil {
						t.Error(err)
					}
				}
			})
		}
	})
	t.Run("macvlan", func(t *testing.T) {
		w := newMvWorld(t)
		for _, tc := range families {
			t.Run(tc.name, func(t *testing.T) {
				list := w.mvNetwork("mv6off"+tc.name, 10, map[string]any{"ipam": ranges(w.dataDir, tc.subnets)})
				ctr1, _, res1 := w.mvAttach(list)
				_, _, res2 := w.mvAttach(list)
				checkIPv6State(t, ctr1, res1)
				for j, ipc := range res2.IPs {
					if err := ping(ctr1, ipc.Address.IP.String()); err != nil {
						t.Errorf("to container 2's address %d: %v", j, err)
					}
				}
			})
		}
	})
}

// checkIPv6State checks eth0 in ctr against the IPv6 its result implies.
func checkIPv6State(t *testing.T, ctr ns.NetNS, res *current.Result) {
	t.Helper()
	hasV6 := false
	for _, ipc := range res.IPs {
		hasV6 = hasV6 || ipc.Address.IP.To4() == nil
	}
	disabled, v6Addrs, linkLocal := ipv6Of(t, ctr)
	if disabled != !hasV6 {
		t.Errorf("disable_ipv6 = %v on a network with IPv6 %v", disabled, hasV6)
	}
	if !hasV6 {
		if len(v6Addrs) != 0 {
			t.Errorf("IPv6 addresses %v on an IPv4-only network's interface", v6Addrs)
		}
		time.Sleep(quietWait)
		if out := ipv6Sent(t, ctr); out != 0 {
			t.Errorf("the container sent %d IPv6 messages on an IPv4-only network", out)
		}
		return
	}
	if !linkLocal {
		t.Errorf("no link-local address among %v on a network with IPv6", v6Addrs)
	}
	for deadline := time.Now().Add(sentWait); ipv6Sent(t, ctr) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the container sent no IPv6 in %s on a network with IPv6", sentWait)
		}
	}
}

// ipv6Of reads eth0's disable_ipv6 in ctr, its IPv6 addresses, and whether one is
// link-local.
func ipv6Of(t *testing.T, ctr ns.NetNS) (disabled bool, addrs []string, linkLocal bool) {
	t.Helper()
	err := ctr.Do(func(ns.NetNS) error {
		v, err := os.ReadFile("/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
		if err != nil {
			return err
		}
		disabled = strings.TrimSpace(string(v)) == "1"
		l, err := netlinksafe.LinkByName("eth0") // this thread is in ctr
		if err != nil {
			return err
		}
		as, err := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
			linkLocal = linkLocal || a.IP.IsLinkLocalUnicast()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return disabled, addrs, linkLocal
}

// ipv6Sent is the number of IPv6 packets the netns ctr sent (Ip6OutRequests plus
// Ip6OutMcastPkts of its /proc/net/snmp6: MLD reports are multicast).
func ipv6Sent(t *testing.T, ctr ns.NetNS) int {
	t.Helper()
	n := 0
	err := ctr.Do(func(ns.NetNS) error {
		// thread-self: /proc/self/net is the netns of the process's main thread.
		f, err := os.Open("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) == 2 && (fields[0] == "Ip6OutRequests" || fields[0] == "Ip6OutMcastPkts") {
				v, err := strconv.Atoi(fields[1])
				if err != nil {
					return err
				}
				n += v
			}
		}
		return s.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The opt-out the README gives: the reference tuning plugin after moor-bridge in the chain
// sets disable_ipv6 back to 0 on an IPv4-only network, and the container gets its
// link-local address (and sends IPv6 again).
func TestTuningTurnsContainerIPv6BackOn(t *testing.T) {
	w := newWorld(t, "nftables")
	b := w.bridgeConf("mb6tun", "10.218.0.0/24", nil)
	tuning := map[string]any{"type": "tuning", "sysctl": map[string]string{"net.ipv6.conf.eth0.disable_ipv6": "0"}}
	list := conflist(t, "1.0.0", "v6tuning", b, tuning)
	ctr, _, _ := w.attach(list)
	if disabled, _, _ := ipv6Of(t, ctr); disabled {
		t.Fatal("disable_ipv6 is still 1 after tuning set it to 0")
	}
	for deadline := time.Now().Add(sentWait); ; time.Sleep(100 * time.Millisecond) {
		if _, addrs, linkLocal := ipv6Of(t, ctr); linkLocal {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no link-local address after tuning turned IPv6 on: %v", addrs)
		}
	}
}

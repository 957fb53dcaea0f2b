package main

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// The floor's container end is what a moor-bridge ADD on an IPv4-only network makes: up,
// with its address, and IPv6 off (disable_ipv6 1, no IPv6 address, not even fe80::);
// the thread that did it is back in the host's netns.
func TestFloorTurnsIPv6Off(t *testing.T) {
	host := plugintest.Netns(t, "moorbfh")
	ctr := plugintest.Netns(t, "moorbfc")
	d, err := startFloor(&runEnv{host: host})
	if err != nil {
		t.Fatal(err)
	}
	err = host.Do(func(ns.NetNS) error {
		if err := d.(*floorDriver).attach(0, ctr); err != nil {
			return err
		}
		_, err := netlinksafe.LinkByName(bridgeName) // still in the host's netns
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = ctr.Do(func(ns.NetNS) error {
		b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + ifName + "/disable_ipv6")
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != "1" {
			t.Errorf("disable_ipv6 = %q, want 1", b)
		}
		l, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return err
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s is down", ifName)
		}
		v6, err := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if len(v6) != 0 {
			t.Errorf("IPv6 addresses %v on the floor's container end", v6)
		}
		v4, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
		if err == nil && (len(v4) != 1 || !v4[0].IP.Equal(nthAddr(firstCtrIndex))) {
			t.Errorf("IPv4 addresses %v, want %s", v4, nthAddr(firstCtrIndex))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

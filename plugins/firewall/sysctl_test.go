package firewall

import (
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/plugintest"
)

// ApplySysctls sets each value inside the given netns, through paths
// relative to one opened /proc/sys/net, and fails on a file that does not exist or a path
// that climbs out.
func TestApplySysctlsInNetns(t *testing.T) {
	n := plugintest.Netns(t, "moorsysctl")
	read := func(p string) string {
		t.Helper()
		var v string
		err := n.Do(func(ns.NetNS) error {
			b, err := os.ReadFile(procSys + "/" + p)
			v = strings.TrimSpace(string(b))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, v := range []string{"0", "1", "1"} { // the third time, everything is already set
		want := []Sysctl{{Path: "net/ipv4/ip_forward", Value: v}, {Path: "net/ipv4/conf/lo/route_localnet", Value: v}}
		if err := ApplySysctls(n, want); err != nil {
			t.Fatal(err)
		}
		for _, s := range want {
			if got := read(s.Path); got != s.Value {
				t.Errorf("%s = %s, want %s", s.Path, got, s.Value)
			}
		}
	}
	for _, bad := range []Sysctl{
		{Path: "net/ipv4/conf/nosuchlink0/route_localnet", Value: "1"},
		{Path: "net/../kernel/hostname", Value: "x"},
		{Path: "ip_forward", Value: "1"},
	} {
		if err := ApplySysctls(n, []Sysctl{bad}); err == nil {
			t.Errorf("%s: no error", bad.Path)
		}
	}
}

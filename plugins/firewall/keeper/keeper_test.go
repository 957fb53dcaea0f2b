package keeper

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// The keeper, in a namespace playing the host, puts back a flushed ruleset, counts the
// repair in its stats file, refuses a second keeper, and stops once no network is left.
func TestKeeperRepairsAndStops(t *testing.T) {
	plugintest.RequireRoot(t)
	host := plugintest.Netns(t, "keeper")
	h, err := netlink.NewHandleAt(netns.NsHandle(int(host.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kbr0"}}); err != nil {
		t.Fatal(err)
	}
	_, sub, _ := net.ParseCIDR("10.77.0.0/24")
	n := firewall.Network{Name: "kept", Bridge: "kbr0", Subnets: []*net.IPNet{sub}, IPMasq: true, Isolate: true}
	dir := t.TempDir()
	st := firewall.State{Dir: filepath.Join(dir, "firewall")}
	if err := st.SetBackend(firewall.KindNFTables); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveNetwork(n); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, "fw.lock")
	fw, err := firewall.New(firewall.KindNFTables, firewall.Options{NetNS: host, LockFile: lock})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{State: st, IdleTimeout: time.Second, NetNS: host, FirewallLock: lock}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()

	eventually := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: not within 5s", what)
			}
		}
	}
	eventually("network rules made at start", func() bool { return fw.CheckNetwork(n) == nil })
	eventually("keeper running", func() bool { return Running(st.Dir) })
	if err := Run(ctx, o); !errors.Is(err, ErrRunning) {
		t.Fatalf("second keeper: %v, want ErrRunning", err)
	}
	plugintest.Exec(t, host, "nft", "add", "table", "ip", "foreign")
	plugintest.Exec(t, host, "nft", "delete", "table", "inet", "moor")
	eventually("rules repaired", func() bool { return fw.CheckNetwork(n) == nil })
	eventually("repair in the stats file", func() bool {
		s, ok, err := ReadStats(st.Dir)
		return err == nil && ok && s.Repairs >= 1 && s.Events && strings.Contains(s.LastWhat, "network kept")
	})
	if out := plugintest.Exec(t, host, "nft", "list", "tables"); !strings.Contains(out, "table ip foreign") {
		t.Fatalf("foreign table gone:\n%s", out)
	}

	if err := st.RemoveNetwork(n.Name); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("keeper did not stop with no network recorded")
	}
	if Running(st.Dir) {
		t.Fatal("lock still held after Run returned")
	}
}

package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/firewall/keeper"
)

// moor-bridge's ADD records the published port and starts the keeper (moor-dns
// keep-firewall) in the host namespace; a flushed ruleset comes back by itself with the
// port published again and the container untouched; DEL forgets the port.
func TestBridgeKeeperRestoresRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		runDir := t.TempDir()
		t.Setenv("MOOR_RUN_DIR", runDir)
		t.Setenv("MOOR_FIREWALL_KEEPER", "")
		dir := filepath.Join(runDir, "firewall")
		t.Cleanup(func() { stopKeeper(t, dir) })
		list := w.network("keepnet", "mbr0", "10.212.0.0/24", nil)
		web, rt, res := w.attach(list, map[string]any{"hostPort": 18110, "containerPort": 80, "protocol": "tcp"})
		serveTCP(t, web, ":80")
		serveTCP(t, w.outside, outsideIP+":9000")
		st := firewall.State{Dir: dir}
		if !st.HasAttachment("keepnet", rt.ContainerID, "eth0") {
			t.Fatal("ADD recorded no published port")
		}
		waitFor(t, "keeper running", func() bool { return keeper.Running(dir) })

		flush := [][]string{{"nft", "flush", "ruleset"}}
		if w.backend == "iptables" {
			flush = [][]string{{"iptables", "-F"}, {"iptables", "-t", "nat", "-F"}}
		}
		_ = w.host.Do(func(ns.NetNS) error {
			for _, c := range flush {
				if out, err := execOut(c[0], c[1:]...); err != nil {
					t.Errorf("%v: %v: %s", c, err, out)
				}
			}
			return nil
		})
		waitFor(t, "published port back", func() bool {
			_, err := dialTCP(w.outside, hostUplinkIP+":18110")
			return err == nil
		})
		if src, err := dialTCP(web, outsideIP+":9000"); err != nil || src != hostUplinkIP {
			t.Errorf("masquerade after the repair: seen as %q, %v", src, err)
		}
		if got := ipOf(res); got == "" {
			t.Fatal("no address in the result")
		}
		waitFor(t, "repair counted", func() bool {
			s, ok, err := keeper.ReadStats(dir)
			return err == nil && ok && s.Repairs >= 1
		})

		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if st.HasAttachment("keepnet", rt.ContainerID, "eth0") {
			t.Fatal("DEL left the published port recorded")
		}
	})
}

// waitFor polls ok for up to 10 s (a generous deadline for a loaded machine).
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// stopKeeper ends the keeper the test's ADD started, by the pid in its stats file.
func stopKeeper(t *testing.T, dir string) {
	s, ok, err := keeper.ReadStats(dir)
	if err != nil || !ok || s.PID <= 1 {
		t.Logf("keeper pid unknown (%v); it stops by itself once its state is gone", err)
		return
	}
	if p, err := os.FindProcess(s.PID); err == nil {
		_ = p.Signal(syscall.SIGTERM)
	}
	waitFor(t, "keeper stopped", func() bool { return !keeper.Running(dir) })
}

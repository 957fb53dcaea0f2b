package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moornet/moor/cmd/moor/internal/cli"
	"github.com/moornet/moor/plugins/firewall/keeper"
	"github.com/moornet/moor/plugins/plugintest"
)

// `moor network connect` (moor-bridge's ADD) starts the firewall keeper; after `nft
// flush ruleset` in the host namespace the rules come back, the container keeps its
// address, and `moor doctor` reports the repair.
func TestDoctorReportsKeeperRepair(t *testing.T) {
	w := newWorld(t)
	run := t.TempDir()
	t.Setenv(cli.EnvRunDir, run)
	t.Setenv("MOOR_FIREWALL_KEEPER", "")
	dir := filepath.Join(run, "firewall")
	t.Cleanup(func() {
		if s, ok, _ := keeper.ReadStats(dir); ok && s.PID > 1 {
			if p, err := os.FindProcess(s.PID); err == nil {
				_ = p.Signal(syscall.SIGTERM)
			}
		}
	})
	w.ok("network", "create", "--disable-dns", "--subnet", "10.241.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "web")
	c := w.container()
	w.ok("network", "connect", "--publish", "18120:80", "web", name(c))
	addrBefore := plugintest.Exec(t, c, "ip", "-4", "-o", "addr", "show", "eth0")
	waitUntil(t, "keeper running", func() bool { return keeper.Running(dir) })

	w.inHost("nft", "flush", "ruleset")
	waitUntil(t, "repair counted", func() bool {
		s, ok, err := keeper.ReadStats(dir)
		return err == nil && ok && s.Repairs >= 1
	})
	if out := w.inHost("nft", "list", "table", "inet", "moor"); !strings.Contains(out, "18120") {
		t.Fatalf("published port not back:\n%s", out)
	}
	if got := plugintest.Exec(t, c, "ip", "-4", "-o", "addr", "show", "eth0"); got != addrBefore {
		t.Fatalf("container address changed: %q, was %q", got, addrBefore)
	}
	out, _, _ := w.moor("doctor")
	for _, want := range []string{"firewall keeper repaired moor's rules", "firewall keeper runs for 1 network(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

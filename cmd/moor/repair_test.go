package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moornet/moor/cmd/moor/internal/cli"
)

// With DNS, the sidecar that `moor network connect` starts repairs the firewall: after
// `nft flush ruleset` in the host namespace the published port's rules come back, and
// `moor doctor` reports the repair (how many, when, what). A network without DNS and no
// sidecar: doctor says nothing repairs its rules.
func TestDoctorReportsFirewallRepair(t *testing.T) {
	repaired := regexp.MustCompile(`firewall repaired [1-9][0-9]* time\(s\) \(someone removed moor's rules\), last at [0-9T:+Z-]+: \[`)
	w := newWorld(t)
	run := t.TempDir()
	t.Setenv(cli.EnvRunDir, run)
	t.Setenv("MOOR_FIREWALL_REPAIR", "")
	w.dnsDir, w.dnsSk = "", ""
	paths := hostPaths(t, w, run)
	t.Cleanup(func() { stopSidecar(t, paths.PidFile) })

	w.ok("network", "create", "--disable-dns", "--subnet", "10.241.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "plain")
	w.ok("network", "connect", "plain", name(w.container()))
	if out, _, _ := w.moor("doctor"); !strings.Contains(out, "nothing repairs moor's firewall rules of 1 network(s)") {
		t.Errorf("doctor without a sidecar does not say nothing repairs:\n%s", out)
	}

	w.ok("network", "create", "--subnet", "10.242.0.0/24", "--ipam-opt", "dataDir="+w.dataDir, "web")
	w.ok("network", "connect", "--publish", "18120:80", "web", name(w.container()))
	w.inHost("nft", "flush", "ruleset")
	// A generous "eventually" (the machine is shared and noisy), not a timing assertion:
	// docs/reliability.md reports how fast the repair is.
	const within = 15 * time.Second
	var out string
	start := time.Now()
	for end := start.Add(within); ; time.Sleep(100 * time.Millisecond) {
		out, _, _ = w.moor("doctor")
		if repaired.MatchString(out) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("doctor reports no repair within %s:\n%s", within, out)
		}
	}
	t.Logf("doctor reports the repair after %s", time.Since(start).Round(time.Millisecond))
	for _, want := range []string{"the DNS sidecar repairs moor's firewall rules of 2 network(s)", "network "} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if rules := w.inHost("nft", "list", "table", "inet", "moor"); !strings.Contains(rules, "18120") {
		t.Fatalf("published port not back:\n%s", rules)
	}
}

package doctor

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/statefs"
)

// firewallRepair reports who repairs moor's firewall rules of the host namespace after a
// firewall reload: the DNS sidecar of the namespace runs the Repairer over the firewall
// State (plugins/firewall). It reports the networks the State holds, whether a sidecar
// with the repair runs, and the repairs it made (how many, when last, what), or a repair
// that fails. A State with networks and nothing watching it is information, not a
// problem: the rules are in place until something removes them.
func (d *Doctor) firewallRepair(r *Report) {
	runDir := d.RunDir
	if runDir == "" {
		runDir = statefs.DefaultRunDir
	}
	var dir string
	err := d.Host.Do(func() error {
		nsDir, _, err := netnsid.SelfStateDir(runDir)
		dir = filepath.Join(nsDir, "firewall")
		return err
	})
	if err != nil {
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: "cannot locate the firewall state: " + err.Error()})
		return
	}
	nets, err := firewall.State{Dir: dir}.Load()
	if err != nil {
		d.add(r, Finding{Severity: Problem, Area: AreaFirewall, Message: "firewall state unreadable: " + err.Error(),
			Advice: "the repair skips what it cannot read; the network's next ADD writes it again"})
	}
	if len(nets) == 0 {
		return
	}
	var stats *firewall.RepairStats
	if h, err := d.sidecarHealth(); err == nil {
		stats = h.FirewallRepair
	}
	if stats == nil {
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: fmt.Sprintf(
			"nothing repairs moor's firewall rules of %d network(s) after a firewall reload: no DNS sidecar with firewall repair runs in this host namespace", len(nets)),
			Advice: "the repair runs inside the DNS sidecar (moor-dns serve), started by the ADD of a network with DNS; run `moor-dns serve --idle-timeout=-1s` under the host's service manager to keep it for networks without DNS"})
		return
	}
	d.add(r, Finding{Severity: OK, Area: AreaFirewall, Message: fmt.Sprintf("the DNS sidecar repairs moor's firewall rules of %d network(s) after a firewall reload", len(nets))})
	if stats.Repairs > 0 {
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: fmt.Sprintf(
			"firewall repaired %d time(s) (someone removed moor's rules), last at %s: %s",
			stats.Repairs, stats.LastRepair.Format(time.RFC3339), stats.LastWhat)})
	}
	if stats.LastError != "" {
		d.add(r, Finding{Severity: Problem, Area: AreaFirewall, Message: "the firewall repair failed: " + stats.LastError,
			Advice: "see the DNS sidecar's log (/var/log/moor/moor-dns-serve.log)"})
	}
}

// sidecarHealth asks the host namespace's DNS sidecar for its health.
func (d *Doctor) sidecarHealth() (server.Health, error) {
	if d.DNS.Netns.IsZero() {
		return server.ReadHealth(d.DNS.ControlSocket())
	}
	return server.Sidecar(d.DNS.ControlSocket(), d.DNS.Netns)
}

package agent

import (
	"context"
	"time"

	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/plugins/nftwatch"
)

// firewallSettle lets the rest of a burst of nftables events (a flush is one event per
// object) arrive before the check.
const firewallSettle = 20 * time.Millisecond

// firewallEvents is off only in tests of the resync's backstop.
var firewallEvents = true

// watchFirewall re-applies the networks' nftables rules (hostnet.RepairFirewall) on every
// nftables change in the host namespace, until ctx ends. The agent's own repairs are
// changes too: the check that follows them finds everything in place and writes nothing.
// Without events (the socket cannot be opened, or fails later) every resync still checks.
func (a *Agent) watchFirewall(ctx context.Context) {
	if !firewallEvents {
		return
	}
	nsFd := 0
	if a.host.NS != nil {
		nsFd = int(a.host.NS.Fd())
	}
	w, err := nftwatch.Open(nsFd)
	if err != nil {
		a.log.Warn("nftables events not watched; the firewall is repaired at each resync only", "err", err)
		return
	}
	defer w.Close()
	a.fwEvents.Store(true)
	defer a.fwEvents.Store(false)
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(wake); err != nil {
			a.log.Warn("nftables events no longer watched; the firewall is repaired at each resync only", "err", err)
		}
	}()
	defer func() { <-done }()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-wake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(firewallSettle):
		}
		select {
		case <-wake:
		default:
		}
		for _, n := range a.nets {
			n.repairFirewall()
		}
	}
}

// repairFirewall re-applies the network's nftables rules when they are missing or
// changed, once the session holds the lease they are made from, and counts it.
func (n *network) repairFirewall() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.held {
		return
	}
	fixed, err := hostnet.RepairFirewall(n.host, n.conf, n.lease)
	if err != nil {
		n.errs.Add(1)
		n.lastErr = "repairing the firewall: " + err.Error()
		n.log.Error("repairing the firewall", "err", err)
		return
	}
	if len(fixed) > 0 {
		n.fwRepairs.Add(1)
		n.fwRepaired = time.Now()
		n.log.Warn("firewall rules were removed or changed; re-applied them", "rules", fixed)
	}
}

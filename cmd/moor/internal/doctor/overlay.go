package doctor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/netconf"
)

// overlayRepair reports, per overlay agent socket the configs name, whether an agent
// answers there and so re-applies the overlay networks' nftables rules (moor-overlay's
// table: the masquerade) after a firewall reload, and the repairs it counted per network.
// No agent is information: the plugin works without one, and the rules stay until
// something removes them.
func (d *Doctor) overlayRepair(r *Report) {
	bySocket := map[string][]string{}
	for _, n := range d.Networks {
		if n.Driver != conflist.DriverOverlay {
			continue
		}
		sock, _ := n.Plugin["agentSocket"].(string)
		if sock == "" {
			sock = netconf.DefaultAgentSocket
		}
		bySocket[sock] = append(bySocket[sock], n.Name)
	}
	socks := make([]string, 0, len(bySocket))
	for s := range bySocket {
		socks = append(socks, s)
	}
	slices.Sort(socks)
	for _, sock := range socks {
		names := bySocket[sock]
		st, err := agent.FetchStatus(sock)
		if err != nil {
			d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: fmt.Sprintf(
				"no overlay agent answers on %s: nothing re-applies the masquerade of overlay network(s) %s after a firewall reload", sock, strings.Join(names, ", ")),
				Advice: "run `moor-overlay agent --config FILE` under the host's service manager"})
			continue
		}
		how := "at once (nftables events)"
		if !st.FirewallEvents {
			how = "at each resync only (nftables events not watched)"
		}
		d.add(r, Finding{Severity: OK, Area: AreaFirewall, Message: fmt.Sprintf(
			"the overlay agent on %s re-applies the nftables rules of its %d network(s) after a firewall reload, %s", sock, len(st.Networks), how)})
		for _, ns := range st.Networks {
			if ns.FirewallRepairs > 0 {
				d.add(r, Finding{Severity: Info, Area: AreaFirewall, Network: ns.Name, Message: fmt.Sprintf(
					"overlay firewall repaired %d time(s) (someone removed moor-overlay's rules), last at %s", ns.FirewallRepairs, ns.LastFirewallRepair)})
			}
		}
	}
}

package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins/firewall"
)

// fixAdvice is what every fixable finding says.
const fixAdvice = "moor doctor --fix runs the network's GC, which releases it"

func isNoStore(err error) bool { return errors.Is(err, state.ErrNoStore) }

// drift compares one network's stores with the kernel.
func (d *Doctor) drift(ctx context.Context, r *Report, n *conflist.Network) {
	atts, err := state.Attachments(ctx, n)
	if err != nil {
		if !isNoStore(err) {
			d.add(r, Finding{Severity: Problem, Area: AreaIPAM, Network: n.Name, Message: err.Error(),
				Advice: "check " + state.StoreLocation(n)})
		}
		return
	}
	problems := len(r.Findings)
	for _, a := range atts {
		if a.Netns != "" && netnsGone(a.Netns) {
			d.add(r, Finding{Severity: Problem, Area: AreaIPAM, Network: n.Name, Fixable: true,
				Message: fmt.Sprintf("%s held by container %s (%s) whose netns %s is gone", prefixes(a), a.ContainerID, a.IfName, a.Netns),
				Advice:  fixAdvice + " and the attachment's leftovers"})
		}
	}
	if n.Driver == conflist.DriverBridge {
		d.bridgeDrift(r, n, atts)
		d.ruleDrift(r, n, atts)
	}
	d.dnsDrift(ctx, r, n)
	if len(r.Findings) == problems {
		d.add(r, Finding{Severity: OK, Area: AreaIPAM, Network: n.Name,
			Message: fmt.Sprintf("%d attachment(s); stores and kernel agree", len(atts))})
	}
}

// bridgeDrift: the bridge present and up while containers are attached, and no host veth
// on it that belongs to no attachment.
func (d *Doctor) bridgeDrift(r *Report, n *conflist.Network, atts []store.Attachment) {
	br, err := state.Link(d.Host, n.Conf.Bridge)
	if err != nil {
		d.add(r, Finding{Severity: Problem, Area: AreaLinks, Network: n.Name, Message: err.Error()})
		return
	}
	if len(atts) > 0 && (!br.Present || !br.Up) {
		what := "missing"
		if br.Present {
			what = "down"
		}
		d.add(r, Finding{Severity: Problem, Area: AreaLinks, Network: n.Name,
			Message: fmt.Sprintf("bridge %s is %s while %d container(s) are attached", n.Conf.Bridge, what, len(atts)),
			Advice:  "reconnect the containers (moor network disconnect, then connect): their ADD re-creates the bridge"})
	}
	if !br.Present {
		return
	}
	ports, err := state.BridgePorts(d.Host, n.Conf.Bridge)
	if err != nil {
		d.add(r, Finding{Severity: Problem, Area: AreaLinks, Network: n.Name, Message: err.Error()})
		return
	}
	known := d.knownAltNames(n.Conf.Bridge, n, atts)
	for _, p := range ports {
		if !p.Veth || p.AltName == "" || known[p.AltName] {
			continue
		}
		d.add(r, Finding{Severity: Problem, Area: AreaLinks, Network: n.Name, Fixable: true,
			Message: fmt.Sprintf("host veth %s (altname %s) on bridge %s belongs to no attachment", p.Name, p.AltName, n.Conf.Bridge),
			Advice:  fixAdvice + " (the GC deletes the veth)"})
	}
}

// knownAltNames are the altnames of every attachment of every network on the bridge.
func (d *Doctor) knownAltNames(bridge string, self *conflist.Network, selfAtts []store.Attachment) map[string]bool {
	known := map[string]bool{}
	for _, a := range selfAtts {
		known[state.HostAltName(self.Name, a.ContainerID, a.IfName)] = true
	}
	for _, other := range d.Networks {
		if other == self || other.Driver != conflist.DriverBridge || other.Conf.Bridge != bridge {
			continue
		}
		atts, _ := state.Attachments(context.Background(), other)
		for _, a := range atts {
			known[state.HostAltName(other.Name, a.ContainerID, a.IfName)] = true
		}
	}
	return known
}

// ruleDrift: rules of attachments the IPAM store does not know, and missing network rules
// while containers are attached.
func (d *Doctor) ruleDrift(r *Report, n *conflist.Network, atts []store.Attachment) {
	fw, err := state.DetectFirewall(d.Host, n)
	if err != nil {
		if len(atts) > 0 {
			d.add(r, Finding{Severity: Problem, Area: AreaRules, Network: n.Name, Message: "firewall: " + err.Error()})
		}
		return
	}
	keys, err := fw.Attachments(n.Name)
	if err != nil {
		d.add(r, Finding{Severity: Problem, Area: AreaRules, Network: n.Name, Message: fmt.Sprintf("listing %s rules: %v", fw.Name(), err)})
		return
	}
	have := attachmentKeys(atts)
	for _, k := range keys {
		if have[store.Key{ContainerID: k.ContainerID, IfName: k.IfName}] {
			continue
		}
		d.add(r, Finding{Severity: Problem, Area: AreaRules, Network: n.Name, Fixable: true,
			Message: fmt.Sprintf("%s rules of container %s (%s) belong to no attachment", fw.Name(), k.ContainerID, k.IfName),
			Advice:  fixAdvice + " (the GC deletes the rules)"})
	}
	if len(atts) == 0 {
		return
	}
	err = fw.CheckNetwork(state.FirewallNetwork(n, atts))
	var missing *firewall.MissingRulesError
	switch {
	case errors.As(err, &missing):
		d.add(r, Finding{Severity: Problem, Area: AreaRules, Network: n.Name,
			Message: fmt.Sprintf("%s network rules missing while containers are attached: %s", fw.Name(), strings.Join(missing.Missing, "; ")),
			Advice:  "the network's next ADD restores them (connect a container); was the firewall flushed?"})
	case err != nil:
		d.add(r, Finding{Severity: Problem, Area: AreaRules, Network: n.Name, Message: fmt.Sprintf("checking %s rules: %v", fw.Name(), err)})
	}
}

// dnsDrift: the sidecar answers while the network has records.
func (d *Doctor) dnsDrift(ctx context.Context, r *Report, n *conflist.Network) {
	if n.DNS == nil {
		return
	}
	dns := d.DNS.For(n)
	count, err := dns.Records(ctx, n.Name)
	if err != nil {
		d.add(r, Finding{Severity: Problem, Area: AreaDNS, Network: n.Name, Message: err.Error()})
		return
	}
	if count == 0 || dns.Answering() {
		return
	}
	d.add(r, Finding{Severity: Problem, Area: AreaDNS, Network: n.Name,
		Message: fmt.Sprintf("the DNS sidecar does not answer on %s while the network has %d record(s): containers cannot resolve names", dns.ControlSocket(), count),
		Advice:  "moor-dns starts the sidecar on the next ADD of a DNS network; to start it now run `moor-dns serve`, and check its log in /var/log/moor"})
}

func prefixes(a store.Attachment) string {
	if len(a.IPs) == 0 {
		return "no address"
	}
	s := make([]string, len(a.IPs))
	for i, p := range a.IPs {
		s[i] = p.String()
	}
	return "address " + strings.Join(s, ", ")
}

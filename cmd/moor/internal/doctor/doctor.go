// Package doctor checks that the host can run moor networks and that every network's
// stores still match the kernel, says what to do about each problem, and repairs what is
// safe to repair.
//
// Checks, in order:
//   - kernel: bridge, veth, vxlan, macvlan and wireguard links can be created (probed in a
//     throw-away network namespace that dies with its thread; creating the wireguard link
//     loads the module when it is loadable, and the finding says whether it was loaded,
//     loadable, or missing from the kernel's module tree); nftables and iptables usable (the
//     firewall backends' Status); net.ipv4.ip_forward; br_netfilter loaded or not
//     (information only);
//   - configs: files that do not parse, duplicate network names, ipam sections moor-ipam
//     refuses, and each network's STATUS (the plugins exec'd with CNI_COMMAND=STATUS and
//     the config, as libcni's GetStatusNetworkList does; lists older than 1.1.0 have no
//     STATUS);
//   - drift, per network: addresses held by attachments whose netns is gone, host veths on
//     the bridge whose moor altname belongs to no attachment, firewall rules of attachments
//     the IPAM store does not know, the bridge missing or down and the network's rules
//     missing while containers are attached, and the DNS sidecar down while the network
//     has records;
//   - firewall repair: who re-applies moor's rules after a firewall reload (the DNS
//     sidecar), the repairs it made (when, what) and a repair that fails; for overlay
//     networks, whether their agent answers (it re-applies moor-overlay's table) and
//     the repairs it counted per network.
//
// Fix runs the runtime's GC for every network with a fixable finding (libcni
// GCNetworkList), the valid attachments being those whose netns still exists (IPAM
// attachments and cached ones; an attachment with no recorded netns counts as valid).
// That releases the addresses and removes the veths and rules of everything else. It does
// not restart the DNS sidecar, re-create a bridge or rewrite rules: the network's next ADD
// does that, and the findings say so.
//
// Severity: information never fails the run; a problem does (the CLI exits 3). A missing
// vxlan is information until overlay networks exist; a missing macvlan is a problem only
// when a macvlan network exists; missing WireGuard only when an overlay network asks for
// "encryption": "wireguard" (the finding names those networks).
package doctor

import (
	"context"
	"fmt"
	"sort"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/cmd/moor/internal/cnirt"
	"github.com/moornet/moor/cmd/moor/internal/hostns"
	"github.com/moornet/moor/cmd/moor/internal/state"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins"
)

// Severity of a finding.
type Severity string

// Severities.
const (
	OK      Severity = "ok"
	Info    Severity = "info"
	Problem Severity = "problem"
)

// Areas of findings.
const (
	AreaKernel   = "kernel"
	AreaFirewall = "firewall"
	AreaConfig   = "config"
	AreaIPAM     = "ipam"
	AreaLinks    = "links"
	AreaRules    = "rules"
	AreaDNS      = "dns"
)

// Finding is one result of a check.
type Finding struct {
	Severity Severity `json:"severity"`
	Area     string   `json:"area"`
	Network  string   `json:"network,omitempty"`
	Message  string   `json:"message"`
	// Advice says what to do about a problem.
	Advice string `json:"advice,omitempty"`
	// Fixable: Fix (the network's GC) clears it.
	Fixable bool `json:"fixable,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Findings []Finding `json:"findings"`
}

// Problems counts the findings of severity Problem.
func (r Report) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Problem {
			n++
		}
	}
	return n
}

// Fixable counts the problems Fix can clear.
func (r Report) Fixable() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Problem && f.Fixable {
			n++
		}
	}
	return n
}

// Doctor holds what the checks read.
type Doctor struct {
	Host     *hostns.Host
	Runtime  *cnirt.Runtime
	DNS      state.DNS
	Networks []*conflist.Network
	// LoadErrors are conflist.Load's errors for the config directory.
	LoadErrors []error
	// RunDir is moor's run directory (MOOR_RUN_DIR; statefs.DefaultRunDir when empty),
	// where the firewall State of the host namespace is.
	RunDir string
}

func (d *Doctor) add(r *Report, f Finding) { r.Findings = append(r.Findings, f) }

// Run runs every check.
func (d *Doctor) Run(ctx context.Context) Report {
	var r Report
	d.kernel(&r)
	d.firewalls(&r)
	d.firewallRepair(&r)
	d.overlayRepair(&r)
	d.sysctls(&r)
	d.configs(&r)
	for _, n := range d.Networks {
		d.drift(ctx, &r, n)
	}
	// Host findings first, then each network's together.
	sort.SliceStable(r.Findings, func(i, j int) bool { return r.Findings[i].Network < r.Findings[j].Network })
	return r
}

// Fix runs the GC of every network with a fixable problem in the report. It returns the
// networks it collected and the errors of the ones that failed.
func (d *Doctor) Fix(ctx context.Context, r Report) ([]string, []error) {
	want := map[string]bool{}
	for _, f := range r.Findings {
		if f.Severity == Problem && f.Fixable && f.Network != "" {
			want[f.Network] = true
		}
	}
	var done []string
	var errs []error
	for _, n := range d.Networks {
		if !want[n.Name] {
			continue
		}
		valid, err := d.validAttachments(ctx, n)
		if err == nil {
			err = d.Runtime.GC(n.List, valid)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("network %s: GC: %w", n.Name, err))
			continue
		}
		done = append(done, n.Name)
	}
	sort.Strings(done)
	return done, errs
}

// validAttachments are the attachments, from the IPAM store and the result cache, whose
// netns still exists (or that recorded none).
func (d *Doctor) validAttachments(ctx context.Context, n *conflist.Network) ([]types.GCAttachment, error) {
	seen := map[types.GCAttachment]bool{}
	var out []types.GCAttachment
	keep := func(id, ifName, netns string) {
		k := types.GCAttachment{ContainerID: id, IfName: ifName}
		if seen[k] || (netns != "" && netnsGone(netns)) {
			return
		}
		seen[k] = true
		out = append(out, k)
	}
	atts, err := state.Attachments(ctx, n)
	if err != nil && !isNoStore(err) {
		return nil, err
	}
	for _, a := range atts {
		keep(a.ContainerID, a.IfName, a.Netns)
	}
	cached, err := d.Runtime.Cached(n.Name)
	if err != nil {
		return nil, fmt.Errorf("reading the result cache: %w", err)
	}
	for _, c := range cached {
		keep(c.ContainerID, c.IfName, c.NetNS)
	}
	return out, nil
}

// netnsGone reports whether a netns path no longer names a network namespace.
func netnsGone(path string) bool {
	h, err := plugins.OpenNetns(path)
	if err != nil {
		return isGone(err)
	}
	_ = h.Close()
	return false
}

// attachmentKeys indexes attachments by key.
func attachmentKeys(atts []store.Attachment) map[store.Key]bool {
	out := make(map[store.Key]bool, len(atts))
	for _, a := range atts {
		out[a.Key] = true
	}
	return out
}

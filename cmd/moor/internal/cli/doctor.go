package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moornet/moor/cmd/moor/internal/doctor"
)

func doctorCmd(g *globals) *cobra.Command {
	var fix bool
	var format string
	cmd := &cobra.Command{
		Use:   "doctor [flags]",
		Short: "Check the host and find drift between moor's stores and the kernel",
		Long: `Check that the kernel can run moor networks (bridge, veth, vxlan, macvlan and wireguard
links are probed in a throw-away network namespace; wireguard is needed by encrypted
overlay networks only; nftables and iptables; ip_forward; br_netfilter as information), that every network's config is accepted by its plugins (STATUS), and
that the stores still match the kernel:

  - addresses held by attachments whose network namespace is gone;
  - host veths on a network's bridge that belong to no attachment;
  - firewall rules of attachments the IPAM store does not know;
  - the bridge or the network's rules missing while containers are attached;
  - the DNS sidecar not answering while the network has records;
  - who re-applies moor's firewall rules after a firewall reload (the DNS sidecar; for
    overlay networks their agent) and the repairs they made.

Each problem comes with what to do about it. --fix runs the runtime's GC for every
network with a fixable problem (libcni GC, the valid attachments being those whose
namespace still exists), then checks again.

Exit status: 0 when nothing is wrong, 3 when problems remain, 1 when the checks could not
run.`,
		Example: `  moor doctor
  moor doctor --fix
  moor doctor --format json`,
		Args: usageArgs(cobra.NoArgs),
	}
	cmd.Flags().BoolVar(&fix, "fix", false, "repair what is safe (run the GC of networks with fixable problems)")
	cmd.Flags().StringVar(&format, "format", "text", `output format: "text" or "json"`)
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, _ []string) error {
		if format != "text" && format != formatJSON {
			return usagef("--format %q: want text or json", format)
		}
		d := &doctor.Doctor{Host: s.host, Runtime: s.rt, DNS: s.src.DNS, Networks: s.nets, LoadErrors: s.loadErrs, RunDir: s.g.runDir}
		report := d.Run(cmd.Context())
		out := cmd.OutOrStdout()
		if fix && report.Fixable() > 0 {
			fixed, errs := d.Fix(cmd.Context(), report)
			for _, name := range fixed {
				fmt.Fprintf(out, "fixed: ran the GC of network %s\n", name)
			}
			for _, err := range errs {
				fmt.Fprintf(cmd.ErrOrStderr(), "moor: fix: %v\n", err)
			}
			report = d.Run(cmd.Context())
		}
		var err error
		if format == formatJSON {
			err = writeJSONIndent(out, report)
		} else {
			err = printReport(out, report)
		}
		if err != nil {
			return err
		}
		if n := report.Problems(); n > 0 {
			return &problemsError{n: n}
		}
		return nil
	})
	return cmd
}

// Column widths of the text report: the longest severity and area.
const (
	severityWidth = len("problem")
	areaWidth     = len("firewall")
)

// printReport prints the findings grouped by network (host checks first).
func printReport(w io.Writer, r doctor.Report) error {
	var b strings.Builder
	section := "\x00"
	indent := strings.Repeat(" ", 2+severityWidth+1+areaWidth+1)
	for _, f := range r.Findings {
		if f.Network != section {
			section = f.Network
			if section == "" {
				b.WriteString("host\n")
			} else {
				b.WriteString("network " + section + "\n")
			}
		}
		fmt.Fprintf(&b, "  %-*s %-*s %s\n", severityWidth, f.Severity, areaWidth, f.Area, f.Message)
		if f.Severity == doctor.Problem && f.Advice != "" {
			fmt.Fprintf(&b, "%s-> %s\n", indent, f.Advice)
		}
	}
	if n := r.Problems(); n > 0 {
		fmt.Fprintf(&b, "%d problem(s) found, %d fixable with --fix\n", n, r.Fixable())
	} else {
		b.WriteString("no problems found\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

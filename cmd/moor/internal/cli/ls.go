package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moornet/moor/conflist"
)

// lsHeader titles the columns of `network ls` (and of "table" templates).
var lsHeader = map[string]string{
	"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Subnet": "SUBNET",
	"Gateway": "GATEWAY", "Containers": "CONTAINERS", "Internal": "INTERNAL", "IPv6": "IPV6",
	"DNS": "DNS", "Labels": "LABELS", "CreatedAt": "CREATED AT", "File": "FILE",
}

// lsDefault is the default table.
const lsDefault = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Subnet}}\t{{.Gateway}}\t{{.Containers}}"

// lsFilterKeys are the --filter keys.
var lsFilterKeys = map[string]bool{"driver": true, "name": true, "id": true, "label": true}

type lsOptions struct {
	filters []string
	quiet   bool
	noTrunc bool
	format  string
}

func lsCmd(g *globals) *cobra.Command {
	o := &lsOptions{}
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List moor networks",
		Long: `List the moor networks of the config directory: ID (a hash of the name), name, driver,
subnets, gateways and the number of containers attached (IPAM attachments).

Filters (-f KEY=VALUE, repeatable; values of one key are ORed, keys ANDed):
  driver=bridge      the driver
  name=web           the name contains the value
  id=0123abcd        the ID starts with the value
  label=KEY[=VALUE]  the network has the label (with that value)

--format: "table" (default), "json" (one object per line), a Go template such as
'{{.Name}} {{.Subnet}}', or "table " and a template for a table with a header. Fields:
.ID .Name .Driver .Scope .Subnet .Gateway .Containers .Internal .IPv6 .DNS .Labels
.CreatedAt .File; functions: json, join, upper, lower, title, truncate.`,
		Example: `  moor network ls
  moor network ls -f driver=bridge -q
  moor network ls --format '{{.Name}}: {{.Subnet}}'
  moor network ls --format 'table {{.Name}}\t{{.Containers}}'
  moor network ls --format json --no-trunc`,
		Args: usageArgs(cobra.NoArgs),
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.filters, "filter", "f", nil, "filter output (driver=, name=, id=, label=)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print only network IDs")
	f.BoolVar(&o.noTrunc, "no-trunc", false, "print full network IDs")
	f.StringVar(&o.format, "format", "", `output format: "table", "json" or a Go template`)
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, _ []string) error { return o.run(s, cmd) })
	return cmd
}

func (o *lsOptions) run(s *session, cmd *cobra.Command) error {
	filters, err := parseFilters(o.filters)
	if err != nil {
		return err
	}
	s.warnLoad(cmd.ErrOrStderr())
	var nets []*conflist.Network
	for _, n := range s.nets {
		if filters.match(n) {
			nets = append(nets, n)
		}
	}
	rows, errs := s.src.Rows(cmd.Context(), nets)
	for _, err := range errs {
		fmt.Fprintf(cmd.ErrOrStderr(), "moor: warning: %v\n", err)
	}
	if !o.noTrunc {
		for i := range rows {
			rows[i].ID = rows[i].ID[:conflist.ShortIDLen]
		}
	}
	out := cmd.OutOrStdout()
	if o.quiet {
		for _, r := range rows {
			fmt.Fprintln(out, r.ID)
		}
		return nil
	}
	items := make([]any, len(rows))
	for i := range rows {
		items[i] = rows[i]
	}
	format := o.format
	switch {
	case format == "" || format == formatTable:
		format = lsDefault
	case format == formatJSON:
		return writeJSONLines(out, items)
	}
	var header map[string]string
	if strings.HasPrefix(format, tablePrefix) {
		format = strings.TrimPrefix(format, tablePrefix)
		header = lsHeader
	}
	t, err := parseTemplate(format)
	if err != nil {
		return err
	}
	return writeTemplate(out, t, header, items)
}

// filters maps a filter key to its accepted values.
type filters map[string][]string

func parseFilters(raw []string) (filters, error) {
	out := filters{}
	for _, f := range raw {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !lsFilterKeys[k] {
			keys := make([]string, 0, len(lsFilterKeys))
			for key := range lsFilterKeys {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			return nil, usagef("--filter %q: want KEY=VALUE with KEY one of %s", f, strings.Join(keys, ", "))
		}
		out[k] = append(out[k], v)
	}
	return out, nil
}

func (f filters) match(n *conflist.Network) bool {
	for key, values := range f {
		ok := false
		for _, v := range values {
			ok = ok || matchOne(n, key, v)
		}
		if !ok {
			return false
		}
	}
	return true
}

func matchOne(n *conflist.Network, key, v string) bool {
	switch key {
	case "driver":
		return n.Driver == v
	case "name":
		return strings.Contains(n.Name, v)
	case "id":
		return strings.HasPrefix(n.ID, v)
	case "label":
		lk, lv, hasValue := strings.Cut(v, "=")
		have, ok := n.Labels[lk]
		return ok && (!hasValue || have == lv)
	}
	return false
}

package cli

import "github.com/spf13/cobra"

func inspectCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect NETWORK...",
		Short: "Show the configuration and live state of networks",
		Long: `Print a JSON array with one document per network, shaped like docker network inspect:
Name, Id, Created (the config file's time), Scope, Driver, EnableIPv6, IPAM (Driver,
Options, Config with Subnet, IPRange and Gateway), Internal, Containers (per container:
Name, EndpointID, MacAddress, IPv4Address, IPv6Address, Interface, Netns, and on bridge
networks Shaping: the bandwidth limits in force, read from the kernel), Options (the
driver's fields), Labels and Status.IPAM.Subnets (IPsInUse, DynamicIPsAvailable), plus:

  Live.Bridge    the bridge is present and up (bridge networks)
  Live.Parent    the macvlan parent is present and up (macvlan networks)
  Live.Firewall  the network's firewall rules are present (backend, missing rules)
  Live.DNS       the DNS sidecar answers on its control socket; the network's records
  Live.Errors    what could not be read
  File           the config file

A NETWORK is a name, an ID or a unique ID prefix. -f formats each document with a Go
template instead.`,
		Example: `  moor network inspect web
  moor network inspect -f '{{.Name}} {{range .IPAM.Config}}{{.Subnet}} {{end}}' web db
  moor network inspect -f '{{json .Containers}}' web
  moor network inspect -f '{{.Live.Bridge.Up}}' web`,
		Args:              usageArgs(cobra.MinimumNArgs(1)),
		ValidArgsFunction: g.completeNetworks,
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format each network with a Go template")
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, args []string) error {
		nets, resolveErr := s.resolve(args)
		docs := make([]any, 0, len(nets))
		for _, n := range nets {
			docs = append(docs, s.src.Inspect(cmd.Context(), n))
		}
		var err error
		if format == "" {
			if len(docs) > 0 || resolveErr == nil {
				err = writeJSONIndent(cmd.OutOrStdout(), docs)
			}
		} else {
			t, perr := parseTemplate(format)
			if perr != nil {
				return perr
			}
			err = writeTemplate(cmd.OutOrStdout(), t, nil, docs)
		}
		if err != nil {
			return err
		}
		return resolveErr
	})
	return cmd
}

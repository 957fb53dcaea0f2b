package cli

import (
	"fmt"
	"io"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/spf13/cobra"

	"github.com/moornet/moor/cmd/moor/internal/cnirt"
	"github.com/moornet/moor/conflist"
)

type connectOptions struct {
	aliases     []string
	ips         []string
	name        string
	ifName      string
	containerID string
	publish     []string
}

func connectCmd(g *globals) *cobra.Command {
	o := &connectOptions{}
	cmd := &cobra.Command{
		Use:   "connect [flags] NETWORK NETNS",
		Short: "Attach a network namespace to a network, as a runtime would",
		Long: `Run the network's plugins (CNI ADD through libcni, with the result cache in --cache-dir
and the plugins from --cni-path) for a network namespace: a name under /run/netns or a
path. The container ID is the namespace's name (or a hash of its path) unless
--container-id; the container's name (K8S_POD_NAME, the DNS name) is --name, else the
namespace's name. Prints what the container got.`,
		Example: `  ip netns add web1 && moor network connect web web1
  moor network connect --alias db --ip 10.89.0.10 web /run/netns/db1
  moor network connect -p 8080:80 -p 127.0.0.1:5353:53/udp web web1`,
		Args:              usageArgs(cobra.ExactArgs(2)),
		ValidArgsFunction: g.completeFirstNetwork,
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.aliases, "alias", nil, "DNS alias of the container on the network (repeatable)")
	f.StringArrayVar(&o.ips, "ip", nil, "address to request (repeatable, one per family)")
	f.StringVar(&o.name, "name", "", "container name (default: the netns name)")
	f.StringVar(&o.ifName, "ifname", cnirt.DefaultIfName, "interface name in the container")
	f.StringVar(&o.containerID, "container-id", "", "container ID (default: derived from NETNS)")
	f.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port: [hostIP:]hostPort:containerPort[/proto] (repeatable)")
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, args []string) error {
		n, err := conflist.Resolve(s.nets, args[0])
		if err != nil {
			return err
		}
		c, err := cnirt.ResolveContainer(args[1], o.containerID, o.name)
		if err != nil {
			return &usageError{err}
		}
		caps := n.List.Plugins[0].Network.Capabilities
		rt, err := cnirt.RuntimeConf(c, cnirt.Attach{
			IfName: o.ifName, IPs: o.ips, Aliases: o.aliases, Publish: o.publish, IPsCapability: caps["ips"],
		})
		if err != nil {
			return &usageError{err}
		}
		res, err := s.rt.Add(n.List, rt)
		if err != nil {
			return fmt.Errorf("connecting %s to %s: %w", c.ID, n.Name, err)
		}
		return printResult(cmd.OutOrStdout(), n.Name, c, rt.IfName, res)
	})
	return cmd
}

// printResult summarises an ADD result.
func printResult(w io.Writer, network string, c cnirt.Container, ifName string, res *current.Result) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "connected %s (container %s) to %s as %s\n", c.Name, c.ID, network, ifName)
	for _, iface := range res.Interfaces {
		if iface.Sandbox != "" {
			fmt.Fprintf(tw, "  interface\t%s mac %s mtu %d\n", iface.Name, iface.Mac, iface.Mtu)
		}
	}
	for _, ip := range res.IPs {
		gw := ""
		if ip.Gateway != nil {
			gw = " gateway " + ip.Gateway.String()
		}
		fmt.Fprintf(tw, "  address\t%s%s\n", ip.Address.String(), gw)
	}
	for _, r := range res.Routes {
		via := ""
		if r.GW != nil {
			via = " via " + r.GW.String()
		}
		fmt.Fprintf(tw, "  route\t%s%s\n", r.Dst.String(), via)
	}
	if len(res.DNS.Nameservers) > 0 {
		line := strings.Join(res.DNS.Nameservers, ", ")
		if len(res.DNS.Search) > 0 {
			line += " search " + strings.Join(res.DNS.Search, " ")
		}
		fmt.Fprintf(tw, "  dns\t%s\n", line)
	}
	return tw.Flush()
}

func disconnectCmd(g *globals) *cobra.Command {
	var ifName, containerID string
	cmd := &cobra.Command{
		Use:   "disconnect [flags] NETWORK NETNS",
		Short: "Detach a network namespace from a network",
		Long: `Run the network's plugins (CNI DEL, with the cached result) for a network namespace
attached by connect. NETNS and --container-id name the container as for connect; DEL
succeeds also when the namespace is already gone.`,
		Example: `  moor network disconnect web web1
  moor network disconnect --ifname eth1 web /run/netns/db1`,
		Args:              usageArgs(cobra.ExactArgs(2)),
		ValidArgsFunction: g.completeFirstNetwork,
	}
	cmd.Flags().StringVar(&ifName, "ifname", cnirt.DefaultIfName, "interface name in the container")
	cmd.Flags().StringVar(&containerID, "container-id", "", "container ID (default: derived from NETNS)")
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, args []string) error {
		n, err := conflist.Resolve(s.nets, args[0])
		if err != nil {
			return err
		}
		c, err := cnirt.ResolveContainer(args[1], containerID, "")
		if err != nil {
			return &usageError{err}
		}
		rt, err := cnirt.RuntimeConf(c, cnirt.Attach{IfName: ifName})
		if err != nil {
			return err
		}
		if err := s.rt.Del(n.List, rt); err != nil {
			return fmt.Errorf("disconnecting %s from %s: %w", c.ID, n.Name, err)
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "disconnected %s from %s\n", c.ID, n.Name)
		return err
	})
	return cmd
}

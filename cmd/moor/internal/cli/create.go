package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moornet/moor/cmd/moor/internal/view"
	"github.com/moornet/moor/conflist"
)

type createOptions struct {
	driver     string
	subnets    []string
	gateways   []string
	ipRanges   []string
	internal   bool
	ipv6       bool
	opts       []string
	ipamOpts   []string
	labels     []string
	dns        bool
	disableDNS bool
	dnsDomain  string
	upstreams  []string
}

func createCmd(g *globals) *cobra.Command {
	o := &createOptions{}
	cmd := &cobra.Command{
		Use:   "create [flags] NETWORK",
		Short: "Create a network (write its CNI config list)",
		Long: `Write <conf-dir>/` + conflist.FilePrefix + `-moor-NETWORK.conflist (cniVersion 1.1.0, mode 0644, atomically) and
print the network's ID. Runtimes pick it up at their next ADD; the bridge, addresses and
rules are made by the first container's ADD.

Drivers: bridge (default), macvlan, host, none; overlay is not yet available.

bridge: a moor-bridge entry (bridge "moor-" + 10 digits of the ID unless --opt bridge=,
gateway on the bridge, default route and masquerade unless --internal, published ports)
with moor-ipam, then moor-dns (DNS is on by default; --disable-dns leaves it out).
macvlan: moor-macvlan with moor-ipam (--opt parent=eth0 mode=bridge); DNS with --dns.
host: moor-host (--opt device=NAME moves a host link into the container). none: moor-none.

Without --subnet the first free /24 of 10.89.0.0/24 .. 10.255.255.0/24 is used; --ipv6
adds a unique local /64. A subnet may not overlap another moor network, nor (bridge) a
route of the host. --subnet may be given twice: one IPv4 and one IPv6 subnet; --gateway
and --ip-range apply to the subnet that contains them.

--opt keys:
` + wrapKeys("bridge", conflist.OptionKeys(conflist.DriverBridge)) + `
` + wrapKeys("macvlan", conflist.OptionKeys(conflist.DriverMacvlan)) + `
` + wrapKeys("host", conflist.OptionKeys(conflist.DriverHost)) + `
--ipam-opt keys: dataDir (moor-ipam's store directory), resolvConf.`,
		Example: `  moor network create web
  moor network create --subnet 10.90.0.0/24 --gateway 10.90.0.254 --ip-range 10.90.0.128/25 web
  moor network create --internal --label team=db backend
  moor network create --ipv6 --subnet 10.91.0.0/24 --subnet fd00:91::/64 dual
  moor network create -d macvlan -o parent=eth0 --subnet 192.168.1.0/24 --gateway 192.168.1.1 lan
  moor network create -d bridge -o bridge=br-web -o mtu=1400 --disable-dns web2`,
		Args: usageArgs(cobra.ExactArgs(1)),
	}
	f := cmd.Flags()
	f.StringVarP(&o.driver, "driver", "d", conflist.DriverBridge, "driver: bridge, macvlan, overlay, host or none")
	f.StringArrayVar(&o.subnets, "subnet", nil, "subnet in CIDR form (once per family)")
	f.StringArrayVar(&o.gateways, "gateway", nil, "gateway of the subnet that contains it")
	f.StringArrayVar(&o.ipRanges, "ip-range", nil, "hand out addresses from this CIDR block of a subnet only")
	f.BoolVar(&o.internal, "internal", false, "no route out and no masquerade (bridge)")
	f.BoolVar(&o.ipv6, "ipv6", false, "add an IPv6 subnet (a unique local /64 unless --subnet gives one)")
	f.StringArrayVarP(&o.opts, "opt", "o", nil, "driver option KEY=VALUE")
	f.StringArrayVar(&o.ipamOpts, "ipam-opt", nil, "IPAM option KEY=VALUE (dataDir, resolvConf)")
	f.StringArrayVar(&o.labels, "label", nil, "label KEY=VALUE")
	f.BoolVar(&o.dns, "dns", false, "chain moor-dns (default for bridge networks)")
	f.BoolVar(&o.disableDNS, "disable-dns", false, "do not chain moor-dns")
	f.StringVar(&o.dnsDomain, "dns-domain", "", "search domain of the network's names (moor-dns \"domain\")")
	f.StringArrayVar(&o.upstreams, "dns-upstream", nil, "resolver for names outside the network, IP[:port] (repeatable; default: the host's)")
	cmd.RunE = g.run(func(s *session, cmd *cobra.Command, args []string) error { return o.run(s, cmd, args[0]) })
	return cmd
}

func (o *createOptions) spec(cmd *cobra.Command, name string) (conflist.Spec, error) {
	spec := conflist.Spec{
		Name: name, Driver: o.driver, Subnets: o.subnets, Gateways: o.gateways, IPRanges: o.ipRanges,
		Internal: o.internal, IPv6: o.ipv6, DNSDomain: o.dnsDomain, DNSUpstreams: o.upstreams,
	}
	var err error
	if spec.Opts, err = kv("--opt", o.opts); err != nil {
		return spec, err
	}
	if spec.IPAMOpts, err = kv("--ipam-opt", o.ipamOpts); err != nil {
		return spec, err
	}
	if spec.Labels, err = kv("--label", o.labels); err != nil {
		return spec, err
	}
	switch {
	case o.dns && o.disableDNS:
		return spec, usagef("--dns and --disable-dns exclude each other")
	case o.disableDNS && (o.dnsDomain != "" || len(o.upstreams) > 0):
		return spec, usagef("--dns-domain and --dns-upstream need DNS; drop --disable-dns")
	case cmd.Flags().Changed("dns"):
		spec.DNS = &o.dns
	case o.disableDNS:
		off := false
		spec.DNS = &off
	}
	return spec, nil
}

func (o *createOptions) run(s *session, cmd *cobra.Command, name string) error {
	spec, err := o.spec(cmd, name)
	if err != nil {
		return err
	}
	names, err := conflist.Names(s.g.confDir)
	if err != nil {
		return err
	}
	if file, dup := names[name]; dup {
		return fmt.Errorf("network %q already exists (%s)", name, file)
	}
	var networks []conflist.Taken
	for _, n := range s.nets {
		subnets, _ := view.SubnetsAndGateways(n)
		networks = append(networks, conflist.NetworkTaken(n.Name, subnets)...)
	}
	routes, err := hostRoutes(s)
	if err != nil {
		return err
	}
	res, err := conflist.Build(spec, networks, routes)
	if err != nil {
		var inv *conflist.InvalidError
		if errors.As(err, &inv) {
			return &usageError{err}
		}
		return err
	}
	if _, err := conflist.WriteNew(s.g.confDir, conflist.FileName(name), res.Data); err != nil {
		return err
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), conflist.ID(name))
	return err
}

// hostRoutes reads the host's routes as taken address space.
func hostRoutes(s *session) ([]conflist.Taken, error) {
	routes, err := s.host.Routes()
	if err != nil {
		return nil, err
	}
	nl, err := s.host.Netlink()
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	names := map[int]string{}
	if links, err := nl.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	return conflist.RoutesTaken(routes, func(i int) string { return names[i] }), nil
}

// helpWidth is where help text wraps.
const helpWidth = 88

// wrapKeys lists option keys under a driver name, wrapped for help text.
func wrapKeys(driver string, keys []string) string {
	var b strings.Builder
	line := "  " + driver + ":"
	for _, k := range keys {
		if len(line)+1+len(k) > helpWidth {
			b.WriteString(line + "\n")
			line = "   "
		}
		line += " " + k
	}
	b.WriteString(line)
	return b.String()
}

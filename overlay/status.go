package main

import (
	"context"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdStatus: not available (50) when etcd cannot serve the network or the IPAM store
// cannot be used; limited connectivity (51) when the data plane can probe its peers (the
// WireGuard plane) and one does not answer a full-size packet, naming it and the cause.
func cmdStatus(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	cli, err := hostnet.Client(c, nil)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "overlay store", err)
	}
	defer cli.Close()
	ctx := context.Background()
	if err := hostnet.Registry(cli, c).Status(ctx); err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "overlay store "+strings.Join(c.Store.Endpoints, ","), err)
	}
	id, err := ipamHostID(c)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "host ID", err)
	}
	icall, err := ipamCall(call, c, netip.Prefix{}, id)
	if err != nil {
		return err
	}
	if err := ipamclient.Status(ctx, icall, netconf.MoorIPAM); err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "IPAM store", err)
	}
	return probePeers(ctx, c, cli)
}

// probePeers runs the plane's Probe over every other host of the network (nothing for a
// plane without one, or a host without a lease yet).
func probePeers(ctx context.Context, c *netconf.Conf, cli *clientv3.Client) error {
	if !c.Encrypted() {
		return nil
	}
	id, err := c.ResolveHostID("")
	if err != nil {
		return err
	}
	leases, _, err := hostnet.Registry(cli, c).List(ctx)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "overlay store", err)
	}
	var own *lease.Lease
	for i := range leases {
		if leases[i].HostID == id {
			own = &leases[i]
		}
	}
	if own == nil {
		return nil
	}
	h, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	u, err := dataplane.ResolveUnderlay(h, c.Underlay)
	if err != nil {
		return err
	}
	plane, err := hostnet.Plane(c, hostnet.Host{Handle: h}, *own, u)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "data plane", err)
	}
	prober, ok := plane.(dataplane.Prober)
	if !ok {
		return nil
	}
	problems, err := prober.Probe(dataplane.Peers(leases, id))
	if err != nil {
		return codes.Wrap(codes.LimitedConnectivity, "probing the peers", err)
	}
	if len(problems) > 0 {
		return codes.New(codes.LimitedConnectivity, strings.Join(problems, "; "))
	}
	return nil
}

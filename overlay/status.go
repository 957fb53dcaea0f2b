package main

import (
	"context"
	"net/netip"
	"strings"

	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdStatus: not available (50) when etcd cannot serve the network or the IPAM store
// cannot be used.
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
	return nil
}

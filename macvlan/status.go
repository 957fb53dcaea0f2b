package main

import (
	"context"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdStatus is not ready (50) when the master is missing or down (for a <link>.<id>
// master still to be created: its link), or when IPAM cannot serve. With linkInContainer
// the master lives in containers and is not checked.
func cmdStatus(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if !c.LinkInContainer {
		host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer host.Close()
		if _, err := master.Resolve(host, c.masterSpec()); err != nil {
			return codes.Wrap(codes.PluginNotAvailable, "master", err)
		}
	}
	if c.IPAM.Type != "" {
		if err := ipamclient.Status(context.Background(), call, c.IPAM.Type); err != nil {
			return codes.Wrap(codes.PluginNotAvailable, "IPAM "+c.IPAM.Type, err)
		}
	}
	return nil
}

package main

import (
	"context"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdStatus is not ready (50) when the firewall backend or IPAM cannot work.
func cmdStatus(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	fw, err := openFirewall(c)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "firewall backend", err)
	}
	if err := fw.Status(); err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "firewall backend "+fw.Name(), err)
	}
	if c.IPAM.Type != "" {
		if err := ipamclient.Status(context.Background(), call, c.IPAM.Type); err != nil {
			return codes.Wrap(codes.PluginNotAvailable, "IPAM "+c.IPAM.Type, err)
		}
	}
	return nil
}

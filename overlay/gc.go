package main

import (
	"context"
	"errors"
	"net/netip"

	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdGC removes the veths and addresses of every attachment of this network on this host
// that is not in cni.dev/valid-attachments.
func cmdGC(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := veth.Overlay.GCPorts(c.Bridge, c.Name, c.ValidAttachments); err != nil {
		errs = append(errs, err)
	}
	if err := shaping.GCHost(c.Name, c.ValidAttachments); err != nil {
		errs = append(errs, err)
	}
	id, err := ipamHostID(c)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	icall, err := ipamCall(call, c, netip.Prefix{}, id)
	if err == nil {
		err = ipamclient.GC(context.Background(), icall, netconf.MoorIPAM)
	}
	return errors.Join(append(errs, err)...)
}

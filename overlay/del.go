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

// cmdDel removes the attachment's veth and releases its addresses. It keeps going when a
// step fails and joins the errors; everything already gone (netns included) is success.
func cmdDel(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := veth.Overlay.Delete(call, c.Name); err != nil {
		errs = append(errs, err)
	}
	if err := call.Fault("overlay/del-after-veth"); err != nil {
		return err
	}
	if err := shaping.DelHost(call, c.Name, &c.Conf, c.Capabilities); err != nil {
		errs = append(errs, err)
	}
	id, err := ipamHostID(c)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	icall, err := ipamCall(call, c, netip.Prefix{}, id)
	if err == nil {
		err = ipamclient.Del(context.Background(), icall, netconf.MoorIPAM)
	}
	return errors.Join(append(errs, err)...)
}

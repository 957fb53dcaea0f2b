package main

import (
	"context"
	"errors"

	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdDel removes the attachment's veth, published ports and addresses. It keeps going
// when a step fails and joins the errors, succeeds when everything is already gone (the
// netns too), and always releases the addresses.
func cmdDel(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := veth.Bridge.Delete(call, c.Name); err != nil {
		errs = append(errs, err)
	}
	if err := call.Fault("bridge/del-after-veth"); err != nil {
		return err
	}
	if err := shaping.DelHost(call, c.Name, &c.Conf, c.Capabilities); err != nil {
		errs = append(errs, err)
	}
	if fw, err := openFirewall(c); err == nil {
		if err := fw.DelAttachment(c.Name, call.ContainerID, call.IfName); err != nil {
			errs = append(errs, err)
		}
	} else if !errors.As(err, new(*firewall.UnavailableError)) {
		errs = append(errs, err)
	}
	if c.MacSpoofChk {
		if err := firewall.DelMacSpoof(firewall.Options{LockFile: c.fwLock}, c.Name, call.ContainerID, call.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	if c.IPAM.Type != "" {
		if err := ipamclient.Del(context.Background(), call, c.IPAM.Type); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

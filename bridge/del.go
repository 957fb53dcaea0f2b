package main

import (
	"context"
	"errors"

	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
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
	if fw, err := openFirewall(c); err == nil {
		if err := fw.DelAttachment(c.Name, call.ContainerID, call.IfName); err != nil {
			errs = append(errs, err)
		}
	} else if !errors.As(err, new(*firewall.UnavailableError)) {
		errs = append(errs, err)
	}
	if c.MacSpoofChk {
		if err := firewall.DelMacSpoof(firewall.Options{}, c.Name, call.ContainerID, call.IfName); err != nil {
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

// cmdGC removes the veths, published ports and addresses of every attachment of this
// network that is not in cni.dev/valid-attachments, also when the runtime lost its
// result cache (everything is found by altname, rule label and store key).
func cmdGC(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := veth.Bridge.GCPorts(c.BrName, c.Name, c.ValidAttachments); err != nil {
		errs = append(errs, err)
	}
	valid := make([]firewall.AttachmentKey, 0, len(c.ValidAttachments))
	for _, v := range c.ValidAttachments {
		valid = append(valid, firewall.AttachmentKey{Network: c.Name, ContainerID: v.ContainerID, IfName: v.IfName})
	}
	if c.MacSpoofChk {
		if err := gcMacSpoof(c.Name, valid); err != nil {
			errs = append(errs, err)
		}
	}
	if fw, err := openFirewall(c); err == nil {
		if err := firewall.GC(fw, c.Name, valid); err != nil {
			errs = append(errs, err)
		}
	} else if !errors.As(err, new(*firewall.UnavailableError)) {
		errs = append(errs, err)
	}
	if c.IPAM.Type != "" {
		if err := ipamclient.GC(context.Background(), call, c.IPAM.Type); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

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

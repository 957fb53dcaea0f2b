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
	if err := shaping.GCHost(c.Name, c.ValidAttachments); err != nil {
		errs = append(errs, err)
	}
	valid := make([]firewall.AttachmentKey, 0, len(c.ValidAttachments))
	for _, v := range c.ValidAttachments {
		valid = append(valid, firewall.AttachmentKey{Network: c.Name, ContainerID: v.ContainerID, IfName: v.IfName})
	}
	if c.MacSpoofChk {
		if err := gcMacSpoof(c, valid); err != nil {
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

package main

import (
	"context"
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/link/shim"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdGC drops the shim's and the VLAN master's users that are not in
// cni.dev/valid-attachments (removing them with their last user) and releases the
// addresses of every attachment not in the list; the shim's own reservation stays while
// the shim does. Container links live in container namespaces and go with them.
func cmdGC(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer host.Close()
	var errs []error
	kept, err := hostShim(host, call, c).GC(c.ValidAttachments)
	errs = append(errs, err)
	if c.vlan != nil && !c.LinkInContainer {
		links := &sharedlink.Manager{H: host, LockDir: c.LockDir}
		errs = append(errs, master.GCVLAN(links, c.vlan, c.Master, c.Name, c.ValidAttachments))
	}
	if c.IPAM.Type != "" {
		ipamCall := call
		if kept {
			if ipamCall, err = shim.KeepReservation(call); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		errs = append(errs, ipamclient.GC(context.Background(), ipamCall, c.IPAM.Type))
	}
	return errors.Join(errs...)
}

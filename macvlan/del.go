package main

import (
	"context"
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/link/shim"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// cmdDel removes the container's macvlan, this attachment's use of the host shim and of a
// moor-made VLAN master (each goes with its last user), and the addresses. It keeps going
// when a step fails and joins the errors, succeeds when the netns or the link is already
// gone, and always releases the addresses.
func cmdDel(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	var errs []error
	errs = append(errs, deleteMacvlan(call.Netns, call.IfName))
	if err := call.Fault("macvlan/del-after-link"); err != nil {
		return err
	}
	host, err := netlinksafe.NewHandle()
	if err != nil {
		errs = append(errs, err)
	} else {
		defer host.Close()
		errs = append(errs, hostShim(host, call, c).Detach(), releaseVLANUser(call, c, host))
	}
	if c.IPAM.Type != "" {
		errs = append(errs, ipamclient.Del(context.Background(), call, c.IPAM.Type))
	}
	return errors.Join(errs...)
}

// releaseVLANUser drops this attachment from the users of a moor-made <link>.<id> master,
// in the host or (linkInContainer) in the container, whose netns may be gone: the
// sub-interface went with it then.
func releaseVLANUser(call *plugins.Call, c *conf, host netlinksafe.Handle) error {
	if c.vlan == nil {
		return nil
	}
	h := host
	if c.LinkInContainer {
		if call.Netns == "" {
			return nil
		}
		cont, nsh, err := plugins.NetlinkAt(call.Netns)
		if errors.Is(err, plugins.ErrNetnsGone) {
			return nil
		}
		if err != nil {
			return err
		}
		defer nsh.Close()
		defer cont.Close()
		h = cont
	}
	links := &sharedlink.Manager{H: h, LockDir: c.LockDir}
	return master.ReleaseVLAN(links, c.vlan, c.Master, master.VLANUser(c.Name, call.ContainerID, call.IfName))
}

// cmdGC drops the shim's and the VLAN master's users that are not in
// cni.dev/valid-attachments (removing them with their last user) and releases the
// addresses of every attachment not in the list; the shim's own reservation stays while
// the shim does. Container links live in container namespaces and go with them.
func cmdGC(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	host, err := netlinksafe.NewHandle()
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

// cmdStatus is not ready (50) when the master is missing or down (for a <link>.<id>
// master still to be created: its link), or when IPAM cannot serve. With linkInContainer
// the master lives in containers and is not checked.
func cmdStatus(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	if !c.LinkInContainer {
		host, err := netlinksafe.NewHandle()
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

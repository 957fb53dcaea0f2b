package main

import (
	"context"
	"errors"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/master"
	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/link/sharedlink"
	"github.com/moornet/moor/plugins"
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
	errs = append(errs, deleteMacvlan(call, c.Name), shaping.DelContainer(call, c.Name, &c.Conf, c.Capabilities))
	if err := call.Fault("macvlan/del-after-link"); err != nil {
		return err
	}
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
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

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// ipamHostID resolves the host ID for IPAM: only an etcd IPAM store needs it (its prefix is
// per host), so a missing machine-id does not fail a DEL on a local store.
func ipamHostID(c *netconf.Conf) (string, error) {
	id, err := c.ResolveHostID("")
	if err == nil {
		return id, nil
	}
	var m struct {
		Store struct {
			Type string `json:"type"`
		} `json:"store"`
	}
	if len(c.IPAMRaw) > 0 && json.Unmarshal(c.IPAMRaw, &m) == nil && m.Store.Type == config.StoreEtcd {
		return "", err
	}
	return "", nil
}

// cmdDel removes the attachment's veth and releases its addresses. It keeps going when a
// step fails and joins the errors; everything already gone (netns included) is success.
func cmdDel(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := deleteVeth(call, c); err != nil {
		errs = append(errs, err)
	}
	if err := call.Fault("overlay/del-after-veth"); err != nil {
		return err
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

// deleteVeth deletes the container's interface (which takes the host end with it), or,
// when the netns is gone or lacks it, the host end found by its altname.
func deleteVeth(call *plugins.Call, c *netconf.Conf) error {
	if call.Netns != "" {
		cont, nsh, err := plugins.NetlinkAt(call.Netns)
		switch {
		case err == nil:
			defer nsh.Close()
			defer cont.Close()
			link, err := cont.LinkByName(call.IfName)
			if err == nil {
				if err := cont.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
					return fmt.Errorf("deleting %s in the container: %w", call.IfName, err)
				}
				return nil
			}
			if !plugins.IsNotFound(err) {
				return err
			}
		case !errors.Is(err, plugins.ErrNetnsGone):
			return err
		}
	}
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	link, err := host.LinkByName(hostAltName(c.Name, call.ContainerID, call.IfName))
	if err != nil {
		return nil // nothing left
	}
	if err := host.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
		return fmt.Errorf("deleting host veth %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// cmdGC removes the veths and addresses of every attachment of this network on this host
// that is not in cni.dev/valid-attachments.
func cmdGC(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := gcVeths(c); err != nil {
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

// gcVeths deletes the bridge's ports whose moor altname matches no valid attachment.
func gcVeths(c *netconf.Conf) error {
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	br, err := host.LinkByName(c.Bridge)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil
		}
		return err
	}
	keep := map[string]bool{}
	for _, v := range c.ValidAttachments {
		keep[hostAltName(c.Name, v.ContainerID, v.IfName)] = true
	}
	links, err := host.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if _, ok := l.(*netlink.Veth); !ok || a.MasterIndex != br.Attrs().Index || !stale(a.AltNames, keep) {
			continue
		}
		if err := host.LinkDel(l); err != nil && !plugins.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting stale veth %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

func stale(altNames []string, keep map[string]bool) bool {
	for _, n := range altNames {
		if strings.HasPrefix(n, altNamePrefix) {
			return !keep[n]
		}
	}
	return false
}

// cmdStatus: not available (50) when etcd cannot serve the network or the IPAM store
// cannot be used.
func cmdStatus(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	cli, err := hostnet.Client(c, nil)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "overlay store", err)
	}
	defer cli.Close()
	ctx := context.Background()
	if err := hostnet.Registry(cli, c).Status(ctx); err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "overlay store "+strings.Join(c.Store.Endpoints, ","), err)
	}
	id, err := ipamHostID(c)
	if err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "host ID", err)
	}
	icall, err := ipamCall(call, c, netip.Prefix{}, id)
	if err != nil {
		return err
	}
	if err := ipamclient.Status(ctx, icall, netconf.MoorIPAM); err != nil {
		return codes.Wrap(codes.PluginNotAvailable, "IPAM store", err)
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

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
	if err := deleteVeth(call, c); err != nil {
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

// deleteVeth deletes the container's interface (which takes the host end with it), or,
// when the netns is gone or empty, the host end found by its altname.
func deleteVeth(call *plugins.Call, c *conf) error {
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

// cmdGC removes the veths, published ports and addresses of every attachment of this
// network that is not in cni.dev/valid-attachments, also when the runtime lost its
// result cache (everything is found by altname, rule label and store key).
func cmdGC(call *plugins.Call) error {
	c, err := loadConf(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := gcVeths(c); err != nil {
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

// gcVeths deletes the bridge's moor ports whose altname matches no valid attachment.
func gcVeths(c *conf) error {
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	br, err := host.LinkByName(c.BrName)
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
		if a.MasterIndex != br.Attrs().Index || !staleAltName(a.AltNames, keep) {
			continue
		}
		if _, ok := l.(*netlink.Veth); !ok {
			continue
		}
		if err := host.LinkDel(l); err != nil && !plugins.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting stale veth %s: %w", a.Name, err))
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

// staleAltName reports whether a port carries a moor altname that is not kept.
func staleAltName(altNames []string, keep map[string]bool) bool {
	for _, n := range altNames {
		if strings.HasPrefix(n, altNamePrefix) {
			return !keep[n]
		}
	}
	return false
}

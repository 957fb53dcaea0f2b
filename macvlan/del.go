package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
)

// validAttachmentsKey is the GC config key that lists the attachments to keep.
const validAttachmentsKey = "cni.dev/valid-attachments"

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
		s := &shim{sh: &shared{h: host, lockDir: c.LockDir}, call: call, c: c}
		errs = append(errs, s.detach(), releaseVLANUser(call, c, host))
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
	sh := &shared{h: h, lockDir: c.LockDir}
	user := vlanUser(c.Name, call.ContainerID, call.IfName)
	_, err := sh.release(vlanLink(h, c.vlan, c.Master, user), only(user))
	return err
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
	s := &shim{sh: &shared{h: host, lockDir: c.LockDir}, call: call, c: c}
	kept, err := s.gc()
	errs = append(errs, err)
	if c.vlan != nil && !c.LinkInContainer {
		keep := map[string]bool{}
		for _, v := range c.ValidAttachments {
			keep[vlanUser(c.Name, v.ContainerID, v.IfName)] = true
		}
		prefix := vlanUsersPrefix(c.Name)
		sh := &shared{h: host, lockDir: c.LockDir}
		_, err := sh.release(vlanLink(host, c.vlan, c.Master, ""), func(u string) bool { return strings.HasPrefix(u, prefix) && !keep[u] })
		errs = append(errs, err)
	}
	if c.IPAM.Type != "" {
		ipamCall := call
		if kept {
			if ipamCall, err = keepShimReservation(call); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		errs = append(errs, ipamclient.GC(context.Background(), ipamCall, c.IPAM.Type))
	}
	return errors.Join(errs...)
}

// keepShimReservation is the GC call with the shim's reservation added to the valid
// attachments, so that IPAM keeps the address of a shim that stays.
func keepShimReservation(call *plugins.Call) (*plugins.Call, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(call.StdinData, &raw); err != nil {
		return nil, fmt.Errorf("re-reading the GC config: %w", err)
	}
	var valid []types.GCAttachment
	if v, ok := raw[validAttachmentsKey]; ok {
		if err := json.Unmarshal(v, &valid); err != nil {
			return nil, fmt.Errorf("re-reading %s: %w", validAttachmentsKey, err)
		}
	}
	valid = append(valid, types.GCAttachment{ContainerID: shimContainerID(call.NetworkName), IfName: shimIfName})
	data, err := json.Marshal(valid)
	if err != nil {
		return nil, err
	}
	raw[validAttachmentsKey] = data
	if data, err = json.Marshal(raw); err != nil {
		return nil, err
	}
	gc := *call
	gc.StdinData = data
	return &gc, nil
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
		if _, err := resolveMaster(host, c); err != nil {
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

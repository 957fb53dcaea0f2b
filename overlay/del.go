package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/link/veth"
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
	if err := veth.Overlay.Delete(call, c.Name); err != nil {
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

// cmdGC removes the veths and addresses of every attachment of this network on this host
// that is not in cni.dev/valid-attachments.
func cmdGC(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	var errs []error
	if err := veth.Overlay.GCPorts(c.Bridge, c.Name, c.ValidAttachments); err != nil {
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

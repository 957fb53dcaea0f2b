// Package inproc runs moor-ipam's verbs for one CNI call, in whatever process holds the
// call: the moor-ipam binary itself, or a driver (moor-bridge, moor-macvlan,
// moor-overlay) whose config says ipam.type "moor-ipam" and which therefore needs no
// second exec. It turns the call into a config (package config), opens the network's
// store, runs the allocator and closes the store again.
//
// It does not touch interfaces and does not print results: the caller does.
package inproc

import (
	"context"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins"
)

// open parses the call's config and opens its store. Close the store when done.
func open(call *plugins.Call) (*plugins.NetConf, *allocator.Allocator, store.Store, error) {
	var nc plugins.NetConf
	if err := plugins.LoadConf(call, &nc); err != nil {
		return nil, nil, nil, err
	}
	cfg, err := config.Parse(call.StdinData)
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := allocator.OpenStore(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	return &nc, allocator.New(cfg, st), st, nil
}

func key(call *plugins.Call) store.Key {
	return store.Key{ContainerID: call.ContainerID, IfName: call.IfName}
}

// Add reserves the call's addresses (or returns those its key already holds).
func Add(ctx context.Context, call *plugins.Call) (*current.Result, error) {
	nc, alloc, st, err := open(call)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	req := allocator.Request{
		Key:           key(call),
		Netns:         call.Netns,
		ContainerName: nc.ContainerName(),
		PodNamespace:  nc.CNIArgs.Get("K8S_POD_NAMESPACE"),
		RequestedIPs:  nc.IPs,
	}
	if nc.MAC != nil {
		req.MAC = nc.MAC.String()
	}
	for _, gw := range plugins.SplitList(nc.CNIArgs.Get("GATEWAY")) {
		a, err := netip.ParseAddr(gw)
		if err != nil {
			return nil, plugins.InvalidField("CNI_ARGS GATEWAY", gw, "not an IP address")
		}
		req.Gateways = append(req.Gateways, a.Unmap())
	}
	return alloc.Allocate(ctx, req)
}

// Del releases the call's addresses; an unknown key is fine.
func Del(ctx context.Context, call *plugins.Call) error {
	_, alloc, st, err := open(call)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = alloc.Release(ctx, key(call))
	return err
}

// Check verifies the call's addresses are still reserved for it, as prevResult says.
func Check(ctx context.Context, call *plugins.Call) error {
	nc, alloc, st, err := open(call)
	if err != nil {
		return err
	}
	defer st.Close()
	return alloc.Check(ctx, key(call), nc.PrevResult)
}

// GC releases every attachment not in the config's cni.dev/valid-attachments.
func GC(ctx context.Context, call *plugins.Call) error {
	nc, alloc, st, err := open(call)
	if err != nil {
		return err
	}
	defer st.Close()
	released, err := alloc.GC(ctx, allocator.ValidKeys(nc.ValidAttachments))
	for _, a := range released {
		call.Log.Info("gc released addresses", "container", a.ContainerID, "ifname", a.IfName, "ips", a.IPs)
	}
	return err
}

// Status reports whether the store can serve an ADD now.
func Status(ctx context.Context, call *plugins.Call) error {
	_, alloc, st, err := open(call)
	if err != nil {
		return err
	}
	defer st.Close()
	return alloc.Status(ctx)
}

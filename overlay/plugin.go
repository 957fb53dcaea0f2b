package main

import (
	"context"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/link/shaping"
	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
)

// Design notes.
//
// ADD talks to etcd before it changes anything on the host: it claims (or finds again) the
// host's lease, so an unreachable store fails the ADD with code 11 within the store's
// request timeout and leaves nothing behind. Then, registering the undo of each step right
// after it: the data plane's tunnel device (VXLAN), the bridge with the gateway,
// ip_forward and the masquerade (package hostnet); a one-shot sync of every other host's entries when no agent answers on
// agentSocket for this network (with an agent running, the agent owns the entries and ADD
// leaves them alone, so the two never race); the addresses (moor-ipam's allocator in
// process, configured for the host's subnet: one range, the gateway, and routes to the
// overlay range and, with isDefaultGateway, to everywhere via the gateway); the veth pair
// straight into the container's netns, its host end on the bridge; the container's
// addresses and routes. A lease this ADD claimed, and links it created, are removed again
// when a later step fails.
//
// The host end of the veth carries an altname ("moorov-" + a hash of network, container
// ID and ifname) so DEL finds it without the container's netns and GC finds the veths no
// runtime holds any more.
//
// DEL removes the veth and releases the addresses and needs no etcd (unless the IPAM store
// is etcd). The lease, the device and the bridge stay: they belong to the host, not to the
// container (`moor-overlay agent --leave` releases them).
var plugin = plugins.Plugin{
	Name:   "moor-overlay",
	Add:    cmdAdd,
	Del:    cmdDel,
	Check:  cmdCheck,
	GC:     cmdGC,
	Status: cmdStatus,
}

// hostSide is what ADD and CHECK hold on the host: the host's netlink handle (not owned)
// and the store.
type hostSide struct {
	c      *netconf.Conf
	hostID string
	h      netlinksafe.Handle
	cli    *clientv3.Client
	reg    *lease.Registry
}

func openHost(c *netconf.Conf, h netlinksafe.Handle) (*hostSide, error) {
	id, err := c.ResolveHostID("")
	if err != nil {
		return nil, err
	}
	cli, err := hostnet.Client(c, nil)
	if err != nil {
		return nil, err
	}
	return &hostSide{c: c, hostID: id, h: h, cli: cli, reg: hostnet.Registry(cli, c)}, nil
}

func (s *hostSide) Close() { _ = s.cli.Close() }

func cmdAdd(call *plugins.Call) error {
	c, err := netconf.Load(call)
	if err != nil {
		return err
	}
	if err := call.RequireContainerNetns(); err != nil {
		return err
	}
	hs, err := call.OpenHandles()
	if err != nil {
		return err
	}
	defer hs.Close()
	host, err := openHost(c, hs.Host)
	if err != nil {
		return err
	}
	defer host.Close()

	ctx := context.Background()
	undo := plugins.NewUndo(call.Log)
	defer undo.Rollback()

	u, err := dataplane.ResolveUnderlay(host.h, c.Underlay)
	if err != nil {
		return err
	}
	req, unkey, err := hostnet.Request(c, host.hostID, u)
	undo.Push("remove a new private key", unkey)
	if err != nil {
		return err
	}
	l, created, err := host.reg.Acquire(ctx, req)
	if err != nil {
		return err
	}
	if created {
		undo.Push("release the new lease", func() error {
			if !(hostnet.Host{Handle: hs.Host}).Idle(c.Bridge) {
				return nil // a concurrent ADD found the lease and attached a container
			}
			_, _, err := host.reg.Release(context.Background(), host.hostID)
			return err
		})
	}
	if err := call.Fault("overlay/after-lease"); err != nil {
		return err
	}
	// The reservation (in the lease's subnet) runs beside the host's devices and the peer
	// sync, up to the join before the veth (see ipamclient.Pending). Its place in the
	// sequence stays there, so every error before the join is the step's own.
	icall, err := ipamCall(call, c, l.Subnet, host.hostID)
	if err != nil {
		return err
	}
	ipam := ipamclient.Start(ctx, icall, netconf.MoorIPAM, undo, "overlay/after-ipam")
	plane, err := hostnet.Plane(c, hostnet.Host{Handle: host.h}, l, u)
	if err != nil {
		return err
	}
	unprepare, err := hostnet.Prepare(hostnet.Host{Handle: host.h}, c, plane, l)
	undo.Push("remove new host links", unprepare)
	if err != nil {
		return err
	}
	if err := call.Fault("overlay/after-device"); err != nil {
		return err
	}
	if !agent.Healthy(c.AgentSocket, c.Name) {
		if err := syncPeers(ctx, host, plane); err != nil {
			return err
		}
	}
	res, err := ipam.Wait()
	if err != nil {
		return err
	}
	att, err := attach(hs.Host, hs.Container, int(hs.ContainerNS), call, c, plane.LinkMTU(), res)
	if att.hostVeth != nil {
		name := att.hostVeth.Attrs().Name
		undo.Push("delete veth "+name, func() error { return plugins.DeleteLinkByName(hs.Host, name) })
	}
	if err != nil {
		return err
	}
	if isolate, err := hostnet.IsolatePorts(hostnet.Host{Handle: host.h}, c); err != nil {
		return err
	} else if isolate {
		if err := hs.Host.LinkSetIsolated(att.hostVeth, true); err != nil {
			return fmt.Errorf("isolating bridge port %s: %w", att.hostVeth.Attrs().Name, err)
		}
	}
	if err := call.Fault("overlay/after-veth"); err != nil {
		return err
	}
	if err := shaping.AddHost(call, hs.Host, att.hostVeth, c.Name, c.Shaping, undo); err != nil {
		return err
	}
	if err := call.Fault("overlay/after-shaping"); err != nil {
		return err
	}
	result := buildResult(call, att, res)
	undo.Commit()
	return call.PrintResult(result)
}

// syncPeers writes every other host's entries (and removes unjustified ones): the one-shot
// sync of an ADD on a host without a running agent.
func syncPeers(ctx context.Context, host *hostSide, plane dataplane.Plane) error {
	leases, _, err := host.reg.List(ctx)
	if err != nil {
		return err
	}
	_, err = plane.Sync(dataplane.Peers(leases, host.hostID))
	return err
}

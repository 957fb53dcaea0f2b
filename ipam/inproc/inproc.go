// Package inproc runs moor-ipam's verbs for one CNI call, in whatever process holds the
// call: the moor-ipam binary itself (Plugin), or a driver (moor-bridge, moor-macvlan,
// moor-overlay) whose config says ipam.type "moor-ipam" and which therefore needs no
// second exec: importing this package registers it with the framework's ipamclient. It
// takes the config the framework loaded (its ipam section through package config, once
// per call), opens the network's store, runs the allocator and closes the store again.
//
// A config whose store this binary does not link (etcd, see ipam/allocator/etcdstore)
// is declined with ipamclient.ErrNotInProcess, and the framework execs moor-ipam-etcd.
//
// It does not touch interfaces and does not print results: the caller does.
package inproc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sync"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/ipamclient"
)

// MoorIPAM is the ipam type served in process.
const MoorIPAM = "moor-ipam"

// MoorIPAMEtcd is the binary exec'd for a moor-ipam config whose store the process does
// not link (etcd).
const MoorIPAMEtcd = "moor-ipam-etcd"

func init() { ipamclient.Register(MoorIPAM, impl{}, MoorIPAMEtcd) }

// impl is moor-ipam as an ipamclient.InProcess.
type impl struct{}

// open parses the ipam section of the loaded config and opens its store. Close the store
// when done.
func open(nc *plugins.NetConf) (*allocator.Allocator, store.Store, error) {
	cfg, err := config.FromNetConf(nc)
	if err != nil {
		return nil, nil, err
	}
	return openCfg(cfg)
}

// openCfg opens the store of a parsed config.
func openCfg(cfg *config.Config) (*allocator.Allocator, store.Store, error) {
	st, err := allocator.OpenStore(cfg)
	if errors.Is(err, allocator.ErrStoreNotLinked) {
		return nil, nil, fmt.Errorf("%w: %w", ipamclient.ErrNotInProcess, err)
	}
	if err != nil {
		return nil, nil, err
	}
	return allocator.New(cfg, st), st, nil
}

func key(call *plugins.Call) store.Key {
	return store.Key{ContainerID: call.ContainerID, IfName: call.IfName}
}

// Add reserves the call's addresses (or returns those its key already holds). Its undo
// releases them (not those its key already held: a duplicate ADD's rollback leaves the
// live attachment its addresses) and, when this reservation created the network's local store file,
// removes the store again unless another attachment got addresses meanwhile (and the
// data directory, when this reservation created it and it is empty): a failed first
// ADD leaves no file behind.
func (i impl) Add(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) (*current.Result, func() error, error) {
	res, commit, undo, err := i.AddDeferred(ctx, call, nc)
	if err != nil {
		return nil, nil, err
	}
	if err := commit(); err != nil {
		return nil, nil, err
	}
	return res, undo, nil
}

// AddDeferred is Add whose reservation is durable only once commit returned nil
// (ipamclient.InProcessDeferred): the local store's commit (its fdatasyncs) is left to
// commit, which the caller may run beside other work. undo waits for commit first.
func (impl) AddDeferred(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) (*current.Result, func() error, func() error, error) {
	cfg, err := config.FromNetConf(nc)
	if err != nil {
		return nil, nil, nil, err
	}
	created, createdDir := false, false
	if cfg.Store.Type == "" || cfg.Store.Type == config.StoreLocal {
		_, err := os.Lstat(allocator.StorePath(cfg))
		created = errors.Is(err, fs.ErrNotExist)
		_, err = os.Lstat(cfg.DataDir)
		createdDir = errors.Is(err, fs.ErrNotExist)
	}
	res, held, commit, err := allocate(ctx, call, nc, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	var (
		once      sync.Once
		commitErr error
	)
	commitOnce := func() error {
		once.Do(func() { commitErr = commit() })
		return commitErr
	}
	undo := func() error {
		// After the commit (a failed one reserved nothing, and the release below finds
		// nothing to free), never beside it: the release needs the store's lock.
		_ = commitOnce()
		if held {
			return nil // a duplicate ADD: the addresses are the live attachment's
		}
		alloc, st, err := openCfg(cfg)
		if err != nil {
			return err
		}
		defer st.Close()
		if _, err := alloc.Release(ctx, key(call)); err != nil || !created {
			return err
		}
		if err := st.Destroy(ctx, store.DestroyOptions{IfUnused: true}); err != nil || !createdDir {
			return err
		}
		_ = os.Remove(cfg.DataDir) // only when empty: another network may have a file there now
		return nil
	}
	return res, commitOnce, undo, nil
}

// allocate reserves the call's addresses, durable once commit returned nil; held says
// its key held them already (a duplicate ADD, or a retry after a crash), whose rollback
// must not release them (read in the allocation's own transaction: no second open of the
// store).
func allocate(ctx context.Context, call *plugins.Call, nc *plugins.NetConf, cfg *config.Config) (res *current.Result, held bool, commit func() error, err error) {
	alloc, st, err := openCfg(cfg)
	if err != nil {
		return nil, false, nil, err
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
			return nil, false, nil, plugins.InvalidField("CNI_ARGS GATEWAY", gw, "not an IP address")
		}
		req.Gateways = append(req.Gateways, a.Unmap())
	}
	return alloc.AllocateDeferred(ctx, req)
}

// Del releases the call's addresses; an unknown key is fine.
func (impl) Del(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error {
	alloc, st, err := open(nc)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = alloc.Release(ctx, key(call))
	return err
}

// Check verifies the call's addresses are still reserved for it, as prevResult says.
func (impl) Check(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error {
	alloc, st, err := open(nc)
	if err != nil {
		return err
	}
	defer st.Close()
	return alloc.Check(ctx, key(call), nc.PrevResult)
}

// GC releases every attachment not in the config's cni.dev/valid-attachments.
func (impl) GC(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error {
	alloc, st, err := open(nc)
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
func (impl) Status(ctx context.Context, _ *plugins.Call, nc *plugins.NetConf) error {
	alloc, st, err := open(nc)
	if err != nil {
		return err
	}
	defer st.Close()
	return alloc.Status(ctx)
}

// Package ipamclient gets a driver its addresses. When the config's ipam.type is
// "moor-ipam" the allocator runs in the driver's own process (no second exec: the
// reference plugins pay one more Go process start per ADD for host-local); for any other
// type the IPAM plugin is exec'd as the spec's delegation says: found in CNI_PATH, the
// same CNI_* environment, the whole config on stdin. A moor-ipam config whose store the
// process does not link (etcd, see ipam/allocator/etcdstore) is exec'd to moor-ipam-etcd.
//
// An exec'd IPAM plugin gets a deadline: ExecTimeout (60 s), or the duration in the
// MOOR_IPAM_TIMEOUT environment variable. A plugin that has not answered by then is killed
// with every process it started (it runs in a process group of its own) and the verb fails with code 11 (try again later) naming the plugin, the verb and the
// deadline. 60 s is far above what an IPAM plugin needs (milliseconds; an etcd store's
// operations are bounded by its own 5 s request timeout) and below the runtimes' own
// deadlines (kubelet's runtime request timeout is 2 min), so the runtime gets moor's
// answer rather than killing the driver mid-way. The in-process allocator needs none:
// its store bounds every operation itself.
//
// It does not configure interfaces with the result: that is the driver's job.
package ipamclient

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/inproc"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
)

// MoorIPAM is the ipam type served in process.
const MoorIPAM = "moor-ipam"

// ExecTimeout bounds one exec'd IPAM call unless TimeoutEnv says otherwise.
const ExecTimeout = 60 * time.Second

// TimeoutEnv names the environment variable that overrides ExecTimeout (a Go duration).
const TimeoutEnv = "MOOR_IPAM_TIMEOUT"

// MoorIPAMEtcd is the binary exec'd for a moor-ipam config whose store this process does
// not link (etcd).
const MoorIPAMEtcd = "moor-ipam-etcd"

// inProcess reports whether a call of ipamType runs in this process: moor-ipam, unless
// err says its store is not linked here.
func inProcess(ipamType string, err error) bool {
	return ipamType == MoorIPAM && !errors.Is(err, allocator.ErrStoreNotLinked)
}

// Add reserves addresses for the call's attachment.
func Add(ctx context.Context, call *plugins.Call, ipamType string) (*current.Result, error) {
	if ipamType == MoorIPAM {
		res, err := inproc.Add(ctx, call)
		if inProcess(ipamType, err) {
			return res, err
		}
	}
	res, err := execWithResult(ctx, call, ipamType, "ADD")
	if err != nil {
		return nil, err
	}
	conv, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, codes.Wrap(codes.DecodingFailure, fmt.Sprintf("IPAM plugin %s returned a result moor cannot read", ipamType), err)
	}
	return conv, nil
}

// Del releases the call's addresses. Repeatable.
func Del(ctx context.Context, call *plugins.Call, ipamType string) error {
	if ipamType == MoorIPAM {
		if err := inproc.Del(ctx, call); inProcess(ipamType, err) {
			return err
		}
	}
	return execNoResult(ctx, call, ipamType, "DEL")
}

// Check verifies the call's addresses are still reserved for it.
func Check(ctx context.Context, call *plugins.Call, ipamType string) error {
	if ipamType == MoorIPAM {
		if err := inproc.Check(ctx, call); inProcess(ipamType, err) {
			return err
		}
	}
	return execNoResult(ctx, call, ipamType, "CHECK")
}

// GC releases the addresses of attachments not in the config's valid list.
func GC(ctx context.Context, call *plugins.Call, ipamType string) error {
	if ipamType == MoorIPAM {
		if err := inproc.GC(ctx, call); inProcess(ipamType, err) {
			return err
		}
	}
	return execNoResult(ctx, call, ipamType, "GC")
}

// Status reports whether IPAM can serve an ADD now.
func Status(ctx context.Context, call *plugins.Call, ipamType string) error {
	if ipamType == MoorIPAM {
		if err := inproc.Status(ctx, call); inProcess(ipamType, err) {
			return err
		}
	}
	return execNoResult(ctx, call, ipamType, "STATUS")
}

func find(call *plugins.Call, ipamType string) (string, error) {
	if ipamType == MoorIPAM {
		ipamType = MoorIPAMEtcd // only reached when the store is not linked here
	}
	if call.Path == "" {
		return "", plugins.InvalidEnv(fmt.Sprintf("CNI_PATH is empty: cannot find the IPAM plugin %q", ipamType))
	}
	path, err := invoke.FindInPath(ipamType, filepath.SplitList(call.Path))
	if err != nil {
		return "", plugins.InvalidField("ipam.type", ipamType, fmt.Sprintf("no such plugin in CNI_PATH %s", call.Path))
	}
	return path, nil
}

func args(call *plugins.Call, cmd string) *invoke.Args {
	return &invoke.Args{Command: cmd, ContainerID: call.ContainerID, NetNS: call.Netns, PluginArgsStr: call.Args, IfName: call.IfName, Path: call.Path}
}

func execWithResult(ctx context.Context, call *plugins.Call, ipamType, cmd string) (types.Result, error) {
	path, err := find(call, ipamType)
	if err != nil {
		return nil, err
	}
	ctx, cancel, timeout, err := deadline(ctx, call)
	if err != nil {
		return nil, err
	}
	defer cancel()
	res, err := invoke.ExecPluginWithResult(ctx, path, call.StdinData, args(call, cmd), &groupExec{})
	return res, timedOut(ctx, err, path, cmd, timeout)
}

func execNoResult(ctx context.Context, call *plugins.Call, ipamType, cmd string) error {
	path, err := find(call, ipamType)
	if err != nil {
		return err
	}
	ctx, cancel, timeout, err := deadline(ctx, call)
	if err != nil {
		return err
	}
	defer cancel()
	err = invoke.ExecPluginWithoutResult(ctx, path, call.StdinData, args(call, cmd), &groupExec{})
	return timedOut(ctx, err, path, cmd, timeout)
}

// deadline bounds an exec'd call by ExecTimeout or the call's MOOR_IPAM_TIMEOUT.
func deadline(ctx context.Context, call *plugins.Call) (context.Context, context.CancelFunc, time.Duration, error) {
	timeout := ExecTimeout
	if v := call.Getenv(TimeoutEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, nil, 0, plugins.InvalidEnv(fmt.Sprintf("%s %q: not a positive duration such as \"30s\"", TimeoutEnv, v))
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, cancel, timeout, nil
}

// timedOut turns the failure of a call whose deadline passed into code 11 naming it.
func timedOut(ctx context.Context, err error, path, cmd string, timeout time.Duration) error {
	if err != nil && ctx.Err() != nil {
		return codes.Wrap(codes.TryAgainLater, fmt.Sprintf("IPAM plugin %s (%s) did not answer within %s (%s)", filepath.Base(path), cmd, timeout, TimeoutEnv), err)
	}
	return err
}

// Reserve is a driver's IPAM step in ADD: it reserves the addresses (an empty result when
// the config has no ipam, an L2-only network), registers their release on undo, and then
// checks the driver's fault point named afterPoint.
func Reserve(ctx context.Context, call *plugins.Call, ipamType string, undo *plugins.Undo, afterPoint string) (*current.Result, error) {
	if ipamType == "" {
		return &current.Result{CNIVersion: current.ImplementedSpecVersion}, nil
	}
	res, err := Add(ctx, call, ipamType)
	if err != nil {
		return nil, err
	}
	undo.Push("release addresses", func() error { return Del(ctx, call, ipamType) })
	if err := call.Fault(afterPoint); err != nil {
		return nil, err
	}
	return res, nil
}

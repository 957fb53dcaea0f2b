// Package ipamclient gets a driver its addresses. An IPAM type that registered an
// in-process implementation (moor-ipam does, from package ipam/inproc, which a driver
// links with a blank import) runs in the driver's own process, on the config the driver
// already loaded (Call.Conf): no second exec (the reference plugins pay one more Go
// process start per ADD for host-local) and no second parse. Any other type is exec'd
// as the spec's delegation says: found in CNI_PATH, the same CNI_* environment, the
// whole config on stdin. An in-process implementation that cannot serve a config here
// (a moor-ipam store this binary does not link: etcd) says so with ErrNotInProcess, and
// the call is exec'd to the binary Register named for that case.
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
// A driver's ADD reserves with Start and joins with Pending.Wait where it first needs the
// addresses: an in-process reservation runs beside the driver's link work meanwhile (see
// Pending for what runs concurrently and why an exec'd type does not); or with
// ReserveDurableLater, which returns the decided addresses at once and leaves only the
// store's commit (InProcessDeferred) running until the driver joins it before success.
//
// The framework knows no IPAM implementation: they register themselves. It does not
// configure interfaces with the result: that is the driver's job.
package ipamclient

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/pluginexec"
)

// ExecTimeout bounds one exec'd IPAM call unless TimeoutEnv says otherwise.
const ExecTimeout = 60 * time.Second

// TimeoutEnv names the environment variable that overrides ExecTimeout (a Go duration).
const TimeoutEnv = "MOOR_IPAM_TIMEOUT"

// InProcess is an IPAM implementation that runs in the calling driver's process. Each
// method gets the call and its config as the framework loaded it.
type InProcess interface {
	// Add reserves the call's addresses and returns their undo for a failed ADD: a
	// release, and the removal of whatever state the reservation created.
	Add(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) (*current.Result, func() error, error)
	Del(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error
	Check(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error
	GC(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error
	Status(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) error
}

// InProcessDeferred is an InProcess whose reservation can return before it is durable:
// AddDeferred is Add, except that the reservation holds only once commit returned nil
// (commit may be called from any goroutine, more than once: it runs once); undo waits for
// commit before releasing. A driver reports success only after commit returned nil.
type InProcessDeferred interface {
	AddDeferred(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) (res *current.Result, commit, undo func() error, err error)
}

// ErrNotInProcess is wrapped by an InProcess method that cannot serve this config in
// this process; the call is then exec'd to the fallback binary.
var ErrNotInProcess = errors.New("IPAM config not served in this process")

type registration struct {
	impl     InProcess
	fallback string // binary exec'd when impl returns ErrNotInProcess
}

var registry = map[string]registration{}

// Register makes ipamType run in process with impl; a call impl refuses with
// ErrNotInProcess is exec'd to the binary fallback (found in CNI_PATH). Call it from an
// init function.
func Register(ipamType string, impl InProcess, fallback string) {
	registry[ipamType] = registration{impl: impl, fallback: fallback}
}

// Registered reports whether ipamType registered an in-process implementation: moor's
// own IPAM, which needs nothing of the interface the driver makes (unlike dhcp), so a
// driver may reserve before making it.
func Registered(ipamType string) bool {
	_, ok := registry[ipamType]
	return ok
}

// inProcess returns the registration of ipamType and the call's loaded config, or ok
// false when the type runs by exec.
func inProcess(call *plugins.Call, ipamType string) (registration, *plugins.NetConf, bool, error) {
	reg, ok := registry[ipamType]
	if !ok {
		return reg, nil, false, nil
	}
	nc := call.Conf()
	if nc == nil {
		nc = &plugins.NetConf{}
		if err := plugins.LoadConf(call, nc); err != nil {
			return reg, nil, true, err
		}
	}
	return reg, nc, true, nil
}

// served reports whether an in-process call's outcome is final (not ErrNotInProcess).
func served(err error) bool { return !errors.Is(err, ErrNotInProcess) }

// Add reserves addresses for the call's attachment.
func Add(ctx context.Context, call *plugins.Call, ipamType string) (*current.Result, error) {
	res, _, _, err := add(ctx, call, ipamType, false)
	return res, err
}

// add reserves addresses and returns their undo: the in-process implementation's, or a
// DEL of the exec'd plugin. With deferCommit, an InProcessDeferred implementation's
// commit starts in a goroutine and durable waits for it; otherwise (and for every other
// type) the reservation is durable when add returns and durable is nil.
func add(ctx context.Context, call *plugins.Call, ipamType string, deferCommit bool) (res *current.Result, undo, durable func() error, err error) {
	reg, nc, ok, err := inProcess(call, ipamType)
	if ok {
		if err != nil {
			return nil, nil, nil, err
		}
		if d, ok := reg.impl.(InProcessDeferred); ok && deferCommit {
			res, commit, undo, err := d.AddDeferred(ctx, call, nc)
			if served(err) {
				if err != nil {
					return nil, nil, nil, err
				}
				return res, undo, background(commit), nil
			}
		} else {
			res, undo, err := reg.impl.Add(ctx, call, nc)
			if served(err) {
				return res, undo, nil, err
			}
		}
	}
	execRes, err := execWithResult(ctx, call, ipamType, "ADD")
	if err != nil {
		return nil, nil, nil, err
	}
	undo = func() error { return execNoResult(ctx, call, ipamType, "DEL") }
	conv, err := current.NewResultFromResult(execRes)
	if err != nil {
		return nil, nil, nil, codes.Wrap(codes.DecodingFailure, fmt.Sprintf("IPAM plugin %s returned a result moor cannot read", ipamType), err)
	}
	return conv, undo, nil, nil
}

// background runs commit in a goroutine from now on; the returned function waits for it
// and returns its error.
func background(commit func() error) func() error {
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = commit()
	}()
	return func() error {
		<-done
		return err
	}
}

// verb runs one verb without result in process when ipamType registered, else by exec.
func verb(ctx context.Context, call *plugins.Call, ipamType, cmd string, run func(InProcess, *plugins.NetConf) error) error {
	reg, nc, ok, err := inProcess(call, ipamType)
	if ok {
		if err != nil {
			return err
		}
		if err := run(reg.impl, nc); served(err) {
			return err
		}
	}
	return execNoResult(ctx, call, ipamType, cmd)
}

// Del releases the call's addresses. Repeatable.
func Del(ctx context.Context, call *plugins.Call, ipamType string) error {
	return verb(ctx, call, ipamType, "DEL", func(i InProcess, nc *plugins.NetConf) error { return i.Del(ctx, call, nc) })
}

// Check verifies the call's addresses are still reserved for it.
func Check(ctx context.Context, call *plugins.Call, ipamType string) error {
	return verb(ctx, call, ipamType, "CHECK", func(i InProcess, nc *plugins.NetConf) error { return i.Check(ctx, call, nc) })
}

// GC releases the addresses of attachments not in the config's valid list.
func GC(ctx context.Context, call *plugins.Call, ipamType string) error {
	return verb(ctx, call, ipamType, "GC", func(i InProcess, nc *plugins.NetConf) error { return i.GC(ctx, call, nc) })
}

// Status reports whether IPAM can serve an ADD now.
func Status(ctx context.Context, call *plugins.Call, ipamType string) error {
	return verb(ctx, call, ipamType, "STATUS", func(i InProcess, nc *plugins.NetConf) error { return i.Status(ctx, call, nc) })
}

func find(call *plugins.Call, ipamType string) (string, error) {
	if reg, ok := registry[ipamType]; ok && reg.fallback != "" {
		ipamType = reg.fallback // only reached when the in-process implementation declined
	}
	if call.Path == "" {
		return "", plugins.InvalidEnv(fmt.Sprintf("CNI_PATH is empty: cannot find the IPAM plugin %q", ipamType))
	}
	path, err := pluginexec.Find(ipamType, call.Path)
	if err != nil {
		return "", plugins.InvalidField("ipam.type", ipamType, fmt.Sprintf("no such plugin in CNI_PATH %s", call.Path))
	}
	return path, nil
}

func run(ctx context.Context, call *plugins.Call, path, cmd string) ([]byte, error) {
	a := pluginexec.Args{Command: cmd, ContainerID: call.ContainerID, Netns: call.Netns, Args: call.Args, IfName: call.IfName, Path: call.Path}
	return pluginexec.Run(ctx, path, call.StdinData, a.Env())
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
	out, err := run(ctx, call, path, cmd)
	if err != nil {
		return nil, timedOut(ctx, err, path, cmd, timeout)
	}
	return pluginexec.Result(out)
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
	_, err = run(ctx, call, path, cmd)
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

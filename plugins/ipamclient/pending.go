package ipamclient

import (
	"context"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
)

// Pending is a driver's IPAM step in ADD, started by Start and joined by Wait where the
// addresses are first needed, so that an in-process reservation (store open, flock,
// allocation, the commit's fdatasyncs: about 2 ms of wall time of which a good part is
// waiting for the disk) runs on the process's second processor while the driver creates
// its links.
//
// What runs concurrently: an in-process implementation (and, when it declines with
// ErrNotInProcess, the exec of its fallback) runs in its own goroutine from Start on. It
// reads the call and the config LoadConf loaded (Call.Conf), which the driver only reads
// from then on; it touches no netns (a goroutine that is not locked to its thread never
// runs on a thread a netns helper switched) and no state of the driver. The driver's
// goroutine keeps everything else: the undo stack, the fault points, the netlink handles.
//
// An IPAM type that is not in process is exec'd at the join, synchronously, where the
// driver asks for the addresses: such a plugin may need what the driver made before that
// point (dhcp needs the container's link), and what it does besides reserving is unknown
// to moor, so it is not run beside the driver's own work.
type Pending struct {
	call       *plugins.Call
	afterPoint string
	exec       func() // runs an exec'd type at the first Wait; nil when in process or done
	done       chan struct{}

	res     *current.Result
	release func() error
	durable func() error // waits for a deferred commit (ReserveDurableLater); nil: none
	err     error        // the reservation's error, then the after-point fault's

	joined bool
}

// Start begins the reservation of the call's addresses: an empty result when ipamType is
// empty (an L2-only network). It registers on undo, right away, the release of whatever
// the reservation gets: a rollback before the join waits for an in-process reservation
// to finish and releases it, so a failed ADD holds no addresses whenever it failed. The
// driver's fault point afterPoint is checked at the join. Call Start and Wait from the
// driver's goroutine (the one that owns undo).
func Start(ctx context.Context, call *plugins.Call, ipamType string, undo *plugins.Undo, afterPoint string) *Pending {
	return start(ctx, call, ipamType, undo, afterPoint, true, false)
}

// Reserve is Start and Wait at once, in the calling goroutine: the IPAM step of a driver
// that has nothing worth running beside it.
func Reserve(ctx context.Context, call *plugins.Call, ipamType string, undo *plugins.Undo, afterPoint string) (*current.Result, error) {
	return start(ctx, call, ipamType, undo, afterPoint, false, false).Wait()
}

// ReserveDurableLater is Reserve, except that an in-process reservation that can defer
// its commit (InProcessDeferred: moor-ipam's local store) returns once the addresses are
// decided, and its commit (the store's two fdatasyncs, mostly waiting for the disk, not
// CPU) runs in a goroutine while the driver configures the container's interface with
// them. The driver must call durable, and stop on its error, before it reports success;
// until then a crash may lose the reservation, which is fine because the ADD has not
// returned. durable does nothing for every other IPAM type (their reservation is durable
// when this returns). The undo registered waits for the commit before releasing.
// (moor-macvlan uses it rather than Start: measured side by side, running the whole
// reservation in a goroutine did not pay there, its link work being short: the ADD was
// no faster and took about 0.8 ms more CPU. The commit alone costs little CPU.)
func ReserveDurableLater(ctx context.Context, call *plugins.Call, ipamType string, undo *plugins.Undo, afterPoint string) (res *current.Result, durable func() error, err error) {
	p := start(ctx, call, ipamType, undo, afterPoint, false, true)
	res, err = p.Wait()
	if err != nil {
		return nil, nil, err
	}
	if p.durable == nil {
		return res, func() error { return nil }, nil
	}
	return res, p.durable, nil
}

func start(ctx context.Context, call *plugins.Call, ipamType string, undo *plugins.Undo, afterPoint string, concurrent, deferCommit bool) *Pending {
	p := &Pending{call: call, afterPoint: afterPoint, done: make(chan struct{})}
	if ipamType == "" {
		p.res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
		close(p.done)
		return p
	}
	reserve := func() {
		defer close(p.done)
		p.res, p.release, p.durable, p.err = add(ctx, call, ipamType, deferCommit)
	}
	if _, ok := registry[ipamType]; ok && concurrent {
		go reserve()
	} else {
		p.exec = reserve
	}
	undo.Push("release addresses", func() error {
		if p.exec != nil {
			return nil // exec'd type never run: nothing reserved
		}
		<-p.done
		if p.release == nil {
			return nil
		}
		return p.release()
	})
	return p
}

// Wait joins the reservation and returns its result, or its error, or the error of the
// armed fault point. Repeatable: later calls return the same.
func (p *Pending) Wait() (*current.Result, error) {
	if p.exec != nil {
		run := p.exec
		p.exec = nil
		run()
	}
	<-p.done
	if !p.joined {
		p.joined = true
		if p.err == nil {
			p.err = p.call.Fault(p.afterPoint)
		}
	}
	if p.err != nil {
		return nil, p.err
	}
	return p.res, nil
}

// First returns the error an ADD reports when a step after the reservation's place in the
// sequence failed with err before the join: the reservation's own error when it failed
// (and the fault point's when armed), as an ADD that reserved first would have stopped
// there; else err. An exec'd type not yet run is not run for this: err it is.
func (p *Pending) First(err error) error {
	if p.exec != nil {
		return err
	}
	if _, werr := p.Wait(); werr != nil {
		return werr
	}
	return err
}

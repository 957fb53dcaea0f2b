package ipamclient_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/ipamclient"
	"github.com/moornet/moor/plugins/plugintest"
)

// gated is an in-process IPAM whose Add says when it began and finishes only when the test
// lets it, so a test controls what the driver does while the reservation is under way.
type gated struct {
	began, proceed chan struct{}
	err            error
	released       atomic.Int32
}

func newGated(ipamType string, err error) *gated {
	g := &gated{began: make(chan struct{}), proceed: make(chan struct{}), err: err}
	ipamclient.Register(ipamType, g, "")
	return g
}

func (g *gated) Add(context.Context, *plugins.Call, *plugins.NetConf) (*current.Result, func() error, error) {
	close(g.began)
	<-g.proceed
	if g.err != nil {
		return nil, nil, g.err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: ipamDNS}
	return res, func() error { g.released.Add(1); return nil }, nil
}
func (g *gated) Del(context.Context, *plugins.Call, *plugins.NetConf) error    { return nil }
func (g *gated) Check(context.Context, *plugins.Call, *plugins.NetConf) error  { return nil }
func (g *gated) GC(context.Context, *plugins.Call, *plugins.NetConf) error     { return nil }
func (g *gated) Status(context.Context, *plugins.Call, *plugins.NetConf) error { return nil }

var ipamDNS = current.Result{}.DNS

func init() { ipamDNS.Domain = "from-ipam" }

// letGo lets g's Add finish once it began.
func (g *gated) letGo() { go func() { <-g.began; close(g.proceed) }() }

// driver runs step as a driver's ADD: config loaded, a reservation of ipamType started,
// step given the pending reservation; the undo stack rolls back unless step succeeds.
func driver(t *testing.T, ipamType string, env map[string]string, step func(*plugins.Call, *ipamclient.Pending, *plugins.Undo) error) error {
	t.Helper()
	drv := plugins.Plugin{Name: "drv", Add: func(call *plugins.Call) error {
		nc := &plugins.NetConf{}
		if err := plugins.LoadConf(call, nc); err != nil {
			return err
		}
		undo := plugins.NewUndo(call.Log)
		defer undo.Rollback()
		p := ipamclient.Start(context.Background(), call, nc.IPAM.Type, undo, "drv/after-ipam")
		if err := step(call, p, undo); err != nil {
			return err
		}
		undo.Commit()
		return nil
	}}
	conf := plugintest.Config("1.1.0", "net1", "drv", map[string]any{"ipam": map[string]any{"type": ipamType}})
	_, cerr := plugintest.Run(drv, plugintest.Invocation{Command: "ADD", ContainerID: "c1", Netns: "/x", IfName: "eth0", Config: conf, Env: env})
	if cerr != nil {
		return cerr
	}
	return nil
}

// An in-process reservation begins before the driver joins it, and Wait returns its result.
func TestPendingRunsBesideTheDriver(t *testing.T) {
	g := newGated("gate-beside", nil)
	lastErr := driver(t, "gate-beside", nil, func(_ *plugins.Call, p *ipamclient.Pending, _ *plugins.Undo) error {
		select {
		case <-g.began: // the driver's goroutine has not waited: the reservation runs by itself
		case <-time.After(time.Minute):
			t.Fatal("the reservation did not begin before the join")
		}
		close(g.proceed)
		res, err := p.Wait()
		if err != nil || res.DNS.Domain != "from-ipam" {
			t.Errorf("Wait: %v, %v", res, err)
		}
		return nil
	})
	if lastErr != nil || g.released.Load() != 0 {
		t.Errorf("ADD: %v, released %d times", lastErr, g.released.Load())
	}
}

// A driver step that fails before the join: the rollback waits for the reservation and
// releases it; the step's error is reported when the reservation succeeded, the
// reservation's (or its armed fault point's) when that failed too.
func TestPendingFailureBeforeTheJoin(t *testing.T) {
	stepErr := codes.New(codes.InterfaceConflict, "step failed")
	ipamErr := codes.New(codes.PoolExhausted, "no address left")
	for _, tc := range []struct {
		name     string
		ipamErr  error
		fault    string
		want     string
		released int32
	}{
		{"reservation succeeds", nil, "", "step failed", 1},
		{"reservation fails too", ipamErr, "", "no address left", 0},
		{"after-ipam point armed", nil, "drv/after-ipam", "fault injected at drv/after-ipam", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ipamType := "gate-" + strings.ReplaceAll(tc.name, " ", "-")
			g := newGated(ipamType, tc.ipamErr)
			g.letGo()
			lastErr := driver(t, ipamType, map[string]string{plugins.FaultEnv: tc.fault}, func(_ *plugins.Call, p *ipamclient.Pending, _ *plugins.Undo) error {
				return p.First(stepErr)
			})
			if lastErr == nil || !strings.Contains(lastErr.Error(), tc.want) {
				t.Errorf("ADD error %v, want %q", lastErr, tc.want)
			}
			if got := g.released.Load(); got != tc.released {
				t.Errorf("released %d times, want %d", got, tc.released)
			}
		})
	}
	t.Run("rollback without a join", func(t *testing.T) {
		g := newGated("gate-nojoin", nil)
		g.letGo()
		lastErr := driver(t, "gate-nojoin", nil, func(*plugins.Call, *ipamclient.Pending, *plugins.Undo) error {
			return errors.New("handles failed") // a step before the reservation's place
		})
		if lastErr == nil || !strings.Contains(lastErr.Error(), "handles failed") || g.released.Load() != 1 {
			t.Errorf("ADD error %v, released %d times: want the step's error and one release", lastErr, g.released.Load())
		}
	})
}

// A type that is not in process is exec'd only at the join: not at Start, not for a step
// that failed before the join, not by the rollback. (CNI_PATH is empty, so an exec would
// fail naming it.)
func TestPendingExecsAtTheJoin(t *testing.T) {
	lastErr := driver(t, "not-registered", nil, func(_ *plugins.Call, p *ipamclient.Pending, _ *plugins.Undo) error {
		return p.First(errors.New("step failed"))
	})
	if lastErr == nil || !strings.Contains(lastErr.Error(), "step failed") {
		t.Errorf("ADD error %v, want the step's: the exec'd type ran before the join", lastErr)
	}
	lastErr = driver(t, "not-registered", nil, func(_ *plugins.Call, p *ipamclient.Pending, _ *plugins.Undo) error {
		_, err := p.Wait()
		return err
	})
	if lastErr == nil || !strings.Contains(lastErr.Error(), "CNI_PATH is empty") {
		t.Errorf("ADD error %v, want the exec at the join to look for the plugin", lastErr)
	}
}

// No ipam type (an L2-only network): an empty result, nothing to undo.
func TestPendingWithoutIPAM(t *testing.T) {
	lastErr := driver(t, "", nil, func(_ *plugins.Call, p *ipamclient.Pending, undo *plugins.Undo) error {
		if n := undo.Len(); n != 0 {
			t.Errorf("%d undos registered for no IPAM", n)
		}
		res, err := p.Wait()
		if err != nil || len(res.IPs) != 0 {
			t.Errorf("Wait: %v, %v", res, err)
		}
		return nil
	})
	if lastErr != nil {
		t.Errorf("ADD: %v", lastErr)
	}
}

// Reserve reserves at once: its result, or with the after-point armed the point's error
// and the addresses released again.
func TestReserve(t *testing.T) {
	for _, fault := range []string{"", "drv/after-ipam"} {
		g := newGated("gate-reserve"+fault, nil)
		close(g.proceed)
		lastErr := driver(t, "", map[string]string{plugins.FaultEnv: fault}, func(call *plugins.Call, _ *ipamclient.Pending, undo *plugins.Undo) error {
			res, err := ipamclient.Reserve(context.Background(), call, "gate-reserve"+fault, undo, "drv/after-ipam")
			if err == nil && res.DNS.Domain != "from-ipam" {
				t.Errorf("Reserve: %v", res)
			}
			return err
		})
		wantReleased := int32(0)
		if fault != "" {
			wantReleased = 1
			if lastErr == nil || !strings.Contains(lastErr.Error(), "fault injected at drv/after-ipam") {
				t.Errorf("ADD error %v, want the fault's", lastErr)
			}
		} else if lastErr != nil {
			t.Errorf("ADD: %v", lastErr)
		}
		if got := g.released.Load(); got != wantReleased {
			t.Errorf("fault %q: released %d times, want %d", fault, got, wantReleased)
		}
	}
}

// deferring is an in-process IPAM that can defer its commit (InProcessDeferred): its
// commit says when it began and returns err once the test lets it.
type deferring struct {
	gated
	commitBegan, commitProceed chan struct{}
	commitErr                  error
	plainAdds                  atomic.Int32
}

func (d *deferring) Add(ctx context.Context, call *plugins.Call, nc *plugins.NetConf) (*current.Result, func() error, error) {
	d.plainAdds.Add(1)
	return d.gated.Add(ctx, call, nc)
}

func (d *deferring) AddDeferred(context.Context, *plugins.Call, *plugins.NetConf) (*current.Result, func() error, func() error, error) {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: ipamDNS}
	commit := func() error {
		close(d.commitBegan)
		<-d.commitProceed
		return d.commitErr
	}
	return res, commit, func() error { d.released.Add(1); return nil }, nil
}

// ReserveDurableLater returns the addresses while the commit runs by itself, and durable
// returns the commit's outcome; a commit error fails the ADD and rolls the reservation
// back. An IPAM that cannot defer is reserved durably at once (its plain Add) and
// durable has nothing to wait for.
func TestReserveDurableLater(t *testing.T) {
	for _, commitErr := range []error{nil, errors.New("disk full")} {
		ipamType := fmt.Sprintf("deferring-%v", commitErr != nil)
		d := &deferring{commitBegan: make(chan struct{}), commitProceed: make(chan struct{}), commitErr: commitErr}
		ipamclient.Register(ipamType, d, "")
		lastErr := driver(t, "", nil, func(call *plugins.Call, _ *ipamclient.Pending, undo *plugins.Undo) error {
			res, durable, err := ipamclient.ReserveDurableLater(context.Background(), call, ipamType, undo, "drv/after-ipam")
			if err != nil || res.DNS.Domain != "from-ipam" {
				t.Fatalf("ReserveDurableLater: %v, %v", res, err)
			}
			select {
			case <-d.commitBegan: // the driver has not waited: the commit runs by itself
			case <-time.After(time.Minute):
				t.Fatal("the commit did not begin before durable was called")
			}
			close(d.commitProceed)
			return durable()
		})
		switch {
		case commitErr == nil && (lastErr != nil || d.released.Load() != 0):
			t.Errorf("ADD: %v, released %d times", lastErr, d.released.Load())
		case commitErr != nil && (lastErr == nil || !strings.Contains(lastErr.Error(), "disk full") || d.released.Load() != 1):
			t.Errorf("ADD with a failing commit: %v, released %d times; want the commit's error and one release", lastErr, d.released.Load())
		}
		if d.plainAdds.Load() != 0 {
			t.Errorf("the plain Add ran %d times", d.plainAdds.Load())
		}
	}
	g := newGated("gate-durable", nil)
	close(g.proceed)
	lastErr := driver(t, "", nil, func(call *plugins.Call, _ *ipamclient.Pending, undo *plugins.Undo) error {
		_, durable, err := ipamclient.ReserveDurableLater(context.Background(), call, "gate-durable", undo, "drv/after-ipam")
		if err != nil {
			return err
		}
		return durable()
	})
	if lastErr != nil {
		t.Errorf("ADD with an IPAM that cannot defer: %v", lastErr)
	}
}

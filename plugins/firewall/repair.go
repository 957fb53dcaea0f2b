package firewall

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Repairer puts moor's rules back after someone else removed or changed them (`nft flush
// ruleset`, `iptables -F`, a firewalld reload, `nft delete table inet moor`): it compares
// the kernel with the State (CheckNetwork, CheckAttachment) and re-applies what differs
// (EnsureNetwork, AddAttachment), which rewrite only the chains and map elements whose
// labels differ, so a repair never duplicates a rule and never touches a table or chain
// that is not moor's. Containers are not touched: their links and addresses are not the
// firewall's.
//
// When: on every nftables change in the namespace (the NFNLGRP_NFTABLES netlink multicast
// group, which iptables-nft's changes reach too), a little after the change so that a
// burst of events costs one check, and every Interval as a backstop (an event lost to a
// full socket buffer, iptables-legacy, which sends no event). Moor's own writes also send
// events; the check after them finds nothing to do.
//
// It does not make the State (the bridge driver's ADD, DEL and GC do) and does not
// decide where it runs: it needs CAP_NET_ADMIN in the namespace it repairs.
type Repairer struct {
	Backend Backend
	State   State
	// NetNS is the namespace whose events are watched; nil: the calling thread's. It
	// must be the Backend's.
	NetNS ns.NetNS
	// Interval is the backstop check's period. Zero: DefaultRepairInterval for
	// nftables, DefaultIPTablesRepairInterval for iptables.
	Interval time.Duration
	// Logf, when set, is told of every repair and failure.
	Logf func(format string, args ...any)

	mu    sync.Mutex
	stats RepairStats
}

// Backstop periods. iptables-legacy sends no event, so its period is what bounds the
// time to repair; an nftables check is a few netlink reads.
const (
	DefaultRepairInterval         = 5 * time.Second
	DefaultIPTablesRepairInterval = 500 * time.Millisecond
	repairSettle                  = 20 * time.Millisecond
)

// RepairStats is what a Repairer did so far.
type RepairStats struct {
	Checks     uint64    `json:"checks"`
	Repairs    uint64    `json:"repairs"` // checks that found and re-applied something
	LastRepair time.Time `json:"lastRepair,omitzero"`
	LastWhat   string    `json:"lastWhat,omitempty"` // what the last repair re-applied
	LastError  string    `json:"lastError,omitempty"`
	Events     bool      `json:"events"` // nftables events are watched (else only the backstop)
}

// Stats returns a copy of the counters.
func (r *Repairer) Stats() RepairStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func (r *Repairer) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// Once checks every stored network and attachment and re-applies what is missing or
// changed. It returns what it re-applied ("network NAME", "attachment KEY").
func (r *Repairer) Once() ([]string, error) {
	nets, err := r.State.Load()
	var fixed []string
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, sn := range nets {
		n := sn.Network
		if r.Backend.CheckNetwork(n) != nil {
			if err := r.Backend.EnsureNetwork(n); err != nil {
				errs = append(errs, fmt.Errorf("network %s: %w", n.Name, err))
				continue
			}
			fixed = append(fixed, "network "+n.Name)
		}
		for _, a := range sn.Attachments {
			if r.Backend.CheckAttachment(n, a) == nil {
				continue
			}
			if !r.State.HasAttachment(a.Network, a.ContainerID, a.IfName) {
				continue // deleted since Load: its DEL removes the rules
			}
			if err := r.Backend.AddAttachment(n, a); err != nil {
				errs = append(errs, fmt.Errorf("attachment %s: %w", a.Key(), err))
				continue
			}
			fixed = append(fixed, "attachment "+a.Key().String())
		}
	}
	err = errors.Join(errs...)
	r.mu.Lock()
	r.stats.Checks++
	if len(fixed) > 0 {
		r.stats.Repairs++
		r.stats.LastRepair = time.Now()
		r.stats.LastWhat = fmt.Sprint(fixed)
	}
	if err != nil {
		r.stats.LastError = err.Error()
	}
	r.mu.Unlock()
	if len(fixed) > 0 {
		r.logf("firewall repaired: %v", fixed)
	}
	if err != nil {
		r.logf("firewall repair: %v", err)
	}
	return fixed, err
}

// Run checks once, then on every nftables event and every Interval, until ctx ends. A
// namespace whose nftables events cannot be watched falls back to the backstop alone
// (RepairStats.Events false). It returns ctx's error.
func (r *Repairer) Run(ctx context.Context) error {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultRepairInterval
		if r.Backend.Name() == KindIPTables {
			interval = DefaultIPTablesRepairInterval
		}
	}
	wake := make(chan struct{}, 1)
	if stop, err := r.watch(wake); err != nil {
		r.logf("firewall repair: nftables events not watched, checking every %s: %v", interval, err)
	} else {
		defer stop()
		r.mu.Lock()
		r.stats.Events = true
		r.mu.Unlock()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	_, _ = r.Once()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-wake:
			// Let the rest of the burst (a flush is one event per object) arrive.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(repairSettle):
			}
			select {
			case <-wake:
			default:
			}
		}
		_, _ = r.Once()
	}
}

// watch subscribes to the nftables multicast group of r.NetNS and signals wake (without
// blocking) on every message. stop closes the socket and waits for the reader.
func (r *Repairer) watch(wake chan<- struct{}) (stop func(), err error) {
	cfg := &netlink.Config{Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)}
	if r.NetNS != nil {
		cfg.NetNS = int(r.NetNS.Fd())
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, err := c.Receive()
			var oe *netlink.OpError
			if err != nil && !(errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOBUFS)) {
				return // closed (ENOBUFS, events lost, is one more reason to check)
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	return func() { _ = c.Close(); <-done }, nil
}

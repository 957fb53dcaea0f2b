package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/overlay/wireguard"
)

// Backoff between failed sessions (etcd down, kernel refusing).
const (
	backoffMin = 200 * time.Millisecond
	backoffMax = 5 * time.Second
)

// errOwnLeaseLost: the store no longer holds this host's lease (reclaimed or released by
// someone else); the session starts over and claims one again.
var errOwnLeaseLost = errors.New("this host's lease is no longer in the store")

// errHeartbeatLost: the etcd lease of the heartbeat expired.
var errHeartbeatLost = errors.New("heartbeat lease lost")

// network runs one overlay network on this host.
type network struct {
	conf   *netconf.Conf
	hostID string
	cli    *clientv3.Client
	reg    *lease.Registry
	host   hostnet.Host
	h      netlinksafe.Handle
	log    *slog.Logger
	resync time.Duration

	mu      sync.Mutex
	lease   lease.Lease
	held    bool
	plane   dataplane.Plane
	peers   map[string]dataplane.Peer
	lastErr string
	synced  time.Time
	// fwRepaired is when the network's nftables rules were last re-applied.
	fwRepaired time.Time

	ready     atomic.Bool
	resyncs   atomic.Int64
	drift     atomic.Int64
	events    atomic.Int64
	errs      atomic.Int64
	reclaimed atomic.Int64
	fwRepairs atomic.Int64
	lastDur   atomic.Int64 // nanoseconds of the last resync
	sumDur    atomic.Int64
}

// run keeps sessions going until ctx ends.
func (n *network) run(ctx context.Context) {
	wait := backoffMin
	for ctx.Err() == nil {
		err := n.session(ctx)
		n.ready.Store(false)
		if ctx.Err() != nil {
			return
		}
		n.fail(err)
		n.log.Warn("overlay session ended; starting over", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, backoffMax)
		if err == nil || errors.Is(err, errOwnLeaseLost) {
			wait = backoffMin
		}
	}
}

func (n *network) fail(err error) {
	if err == nil {
		return
	}
	n.errs.Add(1)
	n.mu.Lock()
	n.lastErr = err.Error()
	n.mu.Unlock()
}

// setup claims the lease and prepares the host.
func (n *network) setup(ctx context.Context) error {
	u, err := dataplane.ResolveUnderlay(n.h, n.conf.Underlay)
	if err != nil {
		return err
	}
	req, _, err := hostnet.Request(n.conf, n.hostID, u)
	if err != nil {
		return err
	}
	l, _, err := n.reg.Acquire(ctx, req)
	if err != nil {
		return err
	}
	plane, err := hostnet.Plane(n.conf, n.host, l, u)
	if err != nil {
		return err
	}
	if _, err := hostnet.Prepare(n.host, n.conf, plane, l); err != nil {
		return err
	}
	n.mu.Lock()
	n.lease, n.held, n.plane = l, true, plane
	n.mu.Unlock()
	n.log.Info("lease held", "subnet", l.Subnet, "vtep_mac", l.VTEPMAC.String(), "underlay", l.Underlay)
	return nil
}

// rotate replaces the host's key of an encrypted network: the new private key goes on the
// device, then the new public key into the lease (one transaction), whose change every
// other host's agent applies (its old peer for this host is replaced, see
// wireguard.Plane.Apply). Key first: the other hosts switch as soon as they read the lease,
// and their first packets must find the new key in place. Only when the lease changed
// meanwhile (or no session holds one) does it go the whole way (setup).
func (n *network) rotate(ctx context.Context) error {
	key, err := hostnet.RotateKey(n.conf)
	if err != nil {
		return err
	}
	n.mu.Lock()
	wg, ok := n.plane.(*wireguard.Plane)
	l, held := n.lease, n.held
	var pd *lease.PlaneData
	if ok && held {
		err = wg.SetKey(key)
		pd = wg.PlaneData()
	}
	n.mu.Unlock()
	if ok && held && err == nil {
		var nl lease.Lease
		if nl, err = n.reg.Publish(ctx, l, pd); err == nil {
			n.mu.Lock()
			n.lease = nl
			n.mu.Unlock()
			n.log.Info("rotated the host's key", "public_key", key.Public().String())
			return nil
		}
	}
	if err != nil {
		n.log.Warn("rotating the key in place failed; setting the host up again", "err", err)
	}
	if err := n.setup(ctx); err != nil {
		n.fail(err)
		return err
	}
	n.log.Info("rotated the host's key", "public_key", key.Public().String())
	return nil
}

// session: lease, heartbeat, first sync, then events and periodic resyncs until an error.
func (n *network) session(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := n.setup(ctx); err != nil {
		return err
	}
	id, err := n.reg.Beat(ctx, n.hostID, n.conf.TTL)
	if err != nil {
		return err
	}
	beats, err := n.cli.KeepAlive(ctx, id)
	if err != nil {
		return fmt.Errorf("keeping the heartbeat alive: %w", err)
	}
	go func() {
		for range beats { // drain; the channel closes when the lease is gone
		}
		cancel(errHeartbeatLost)
	}()
	rev, err := n.sync(ctx, true)
	if err != nil {
		return err
	}
	n.reclaim(ctx)
	n.ready.Store(true)
	events := n.reg.Watch(ctx, rev)
	tick := time.NewTicker(n.resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
			if _, err := n.sync(ctx, false); err != nil {
				return err
			}
			n.reclaim(ctx)
		case e, ok := <-events:
			if !ok {
				return context.Cause(ctx)
			}
			if e.Kind == lease.Lost {
				n.log.Warn("lease watch lost; resyncing", "err", e.Err)
				if rev, err = n.sync(ctx, false); err != nil {
					return err
				}
				events = n.reg.Watch(ctx, rev)
				continue
			}
			if err := n.apply(ctx, e); err != nil {
				return err
			}
		}
	}
}

// apply handles one watch event incrementally.
func (n *network) apply(ctx context.Context, e lease.Event) error {
	n.events.Add(1)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Kind {
	case lease.Joined:
		if e.HostID == n.hostID {
			return nil
		}
		p := dataplane.PeerOf(e.Lease)
		if old, ok := n.peers[e.HostID]; ok && old.Subnet != p.Subnet {
			if err := n.plane.Remove(old); err != nil {
				n.log.Error("removing the old entries of a moved host", "peer", e.HostID, "err", err)
			}
		}
		if err := n.plane.Apply(p); err != nil {
			n.errs.Add(1)
			n.log.Error("applying a joined host", "peer", e.HostID, "err", err)
			return nil // the next resync repairs it
		}
		n.peers[e.HostID] = p
		n.log.Info("host joined", "peer", e.HostID, "subnet", p.Subnet, "underlay", p.Underlay)
	case lease.Left:
		if e.HostID == n.hostID {
			return errOwnLeaseLost
		}
		if err := n.plane.Remove(dataplane.PeerOf(e.Lease)); err != nil {
			n.errs.Add(1)
			n.log.Error("removing a host that left", "peer", e.HostID, "err", err)
			return nil
		}
		delete(n.peers, e.HostID)
		n.log.Info("host left", "peer", e.HostID, "subnet", e.Lease.Subnet)
	case lease.Silent:
		if e.HostID != n.hostID {
			go n.reclaim(ctx)
		}
	}
	return nil
}

// sync reads every lease and makes the kernel match (dataplane.Plane.Sync). Entries it had to
// fix count as drift, except on a session's first sync.
func (n *network) sync(ctx context.Context, first bool) (int64, error) {
	start := time.Now()
	leases, rev, err := n.reg.List(ctx)
	if err != nil {
		return 0, err
	}
	own := false
	for _, l := range leases {
		if l.HostID == n.hostID {
			own = true
		}
	}
	if !own {
		return 0, errOwnLeaseLost
	}
	peers := dataplane.Peers(leases, n.hostID)
	n.mu.Lock()
	rep, err := n.plane.Sync(peers)
	n.peers = make(map[string]dataplane.Peer, len(peers))
	for _, p := range peers {
		n.peers[p.HostID] = p
	}
	n.synced = time.Now()
	n.mu.Unlock()
	dur := time.Since(start)
	n.resyncs.Add(1)
	n.lastDur.Store(int64(dur))
	n.sumDur.Add(int64(dur))
	if !first {
		n.repairFirewall() // the backstop of the nftables events (watchFirewall)
	}
	if !first && rep.Drift() > 0 {
		n.drift.Add(int64(rep.Drift()))
		n.log.Warn("resync found drift", "changes", rep.Details)
	}
	if err != nil {
		n.fail(err)
		n.log.Error("resync could not fix everything", "err", err)
	}
	return rev, nil
}

func (n *network) reclaim(ctx context.Context) {
	got, err := n.reg.Reclaim(ctx)
	if err != nil {
		n.fail(err)
		return
	}
	for _, l := range got {
		n.reclaimed.Add(1)
		n.log.Info("reclaimed the lease of a silent host", "peer", l.HostID, "subnet", l.Subnet)
	}
}

// leave releases the lease and removes the host's tunnel device and masquerade. The runner
// must have stopped.
func (n *network) leave(ctx context.Context) error {
	var errs []error
	if _, _, err := n.reg.Release(ctx, n.hostID); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, hostnet.Teardown(n.host, n.conf))
	return errors.Join(errs...)
}

// probe runs the plane's probe over the known peers, outside the lock (it waits for
// replies), into s: per peer for the WireGuard plane, and its problems; nothing for a
// plane without one.
func (n *network) probe(s *NetworkStatus) {
	n.mu.Lock()
	plane := n.plane
	peers := make(map[string]dataplane.Peer, len(n.peers))
	for id, p := range n.peers {
		peers[id] = p
	}
	n.mu.Unlock()
	wg, ok := plane.(*wireguard.Plane)
	if !ok {
		if prober, ok := plane.(dataplane.Prober); ok {
			problems, err := prober.Probe(slices.Collect(maps.Values(peers)))
			if err != nil {
				problems = append(problems, "probing the peers: "+err.Error())
			}
			s.Problems = problems
		}
		return
	}
	for i := range s.Peers {
		ps := &s.Peers[i]
		p, ok := peers[ps.HostID]
		if !ok {
			continue
		}
		ps.WireGuard = wireguardPeer(wg, p)
		if ps.WireGuard.Problem != "" {
			s.Problems = append(s.Problems, ps.WireGuard.Problem)
		}
	}
}

// wireguardPeer reads p's peer on the device and probes it.
func wireguardPeer(pl *wireguard.Plane, p dataplane.Peer) *WireGuardPeer {
	w := &WireGuardPeer{PublicKey: p.Plane.PublicKey}
	if len(w.PublicKey) >= fingerprintLen {
		w.Fingerprint = w.PublicKey[:fingerprintLen]
	}
	st, err := pl.Sessions([]dataplane.Peer{p})
	if err != nil {
		w.Problem = fmt.Sprintf("host %s: reading the device: %v", p.HostID, err)
		return w
	}
	if s := st[0]; s.Present {
		w.InDevice, w.RxBytes, w.TxBytes = true, s.Received, s.Sent
		if s.Endpoint.IsValid() {
			w.Endpoint = s.Endpoint.String()
		}
		for _, a := range s.AllowedIPs {
			w.AllowedIPs = append(w.AllowedIPs, a.String())
		}
		if !s.LastHandshake.IsZero() {
			w.LastHandshake = s.LastHandshake.UTC().Format(time.RFC3339)
		}
	}
	c, err := pl.Check(p)
	if err != nil {
		w.Problem = fmt.Sprintf("host %s: probing: %v", p.HostID, err)
		return w
	}
	w.Reachable, w.FullSize, w.MTU, w.Problem = c.Reachable, c.FullSize, c.MTU, c.Problem
	return w
}

// fingerprintLen is how much of a public key WireGuardPeer.Fingerprint keeps.
const fingerprintLen = 8

// snapshot is the network's state for /status.
func (n *network) snapshot() NetworkStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := NetworkStatus{Name: n.conf.Name, HostID: n.hostID, Ready: n.ready.Load(), LastError: n.lastErr,
		Resyncs: n.resyncs.Load(), Drift: n.drift.Load(), Plane: hostnet.Spec(n.conf).Plane,
		FirewallRepairs: n.fwRepairs.Load()}
	if !n.fwRepaired.IsZero() {
		s.LastFirewallRepair = n.fwRepaired.UTC().Format(time.RFC3339Nano)
	}
	encrypted := n.conf.Encrypted()
	if n.held {
		s.Subnet, s.Gateway, s.Underlay = n.lease.Subnet.String(), n.lease.Gateway().String(), n.lease.Underlay.String()
		if !encrypted {
			s.VTEPMAC = n.lease.VTEPMAC.String()
		} else if pd := n.lease.Plane; pd != nil {
			s.PublicKey = pd.PublicKey
			if pd.Endpoint.IsValid() {
				s.Endpoint = pd.Endpoint.String()
			}
		}
	}
	if !n.synced.IsZero() {
		s.LastSync = n.synced.UTC().Format(time.RFC3339Nano)
	}
	for _, p := range n.peers {
		ps := PeerStatus{HostID: p.HostID, Subnet: p.Subnet.String(), Underlay: p.Underlay.String()}
		if !encrypted {
			ps.VTEPMAC = p.MAC.String()
		}
		s.Peers = append(s.Peers, ps)
	}
	slices.SortFunc(s.Peers, func(a, b PeerStatus) int { return strings.Compare(a.HostID, b.HostID) })
	return s
}

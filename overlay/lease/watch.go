package lease

import (
	"context"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventKind tells what a watch event means.
type EventKind int

// Event kinds.
const (
	// Joined: a lease was created or changed (Lease is the new value).
	Joined EventKind = iota
	// Left: a lease was deleted (Lease is the value it had).
	Left
	// Silent: a host's heartbeat vanished (HostID); its lease may be reclaimed now.
	Silent
	// Lost: the watch ended (compaction, no leader, connection lost); the reader must
	// re-read everything and watch again from the revision it read.
	Lost
)

// Event is one change of the network's leases.
type Event struct {
	Kind   EventKind
	Lease  Lease
	HostID string
	Err    error
}

// Watch reports the changes made after revision rev until ctx ends or the watch is lost
// (a Lost event, then the channel closes).
func (r *Registry) Watch(ctx context.Context, rev int64) <-chan Event {
	out := make(chan Event, 1)
	go func() {
		defer close(out)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		wch := r.cli.Watch(wctx, r.base, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		for resp := range wch {
			if err := resp.Err(); err != nil || resp.Canceled {
				send(ctx, out, Event{Kind: Lost, Err: classify("watching leases", err)})
				return
			}
			for _, ev := range resp.Events {
				if e, ok := r.event(ev); ok && !send(ctx, out, e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(ctx, out, Event{Kind: Lost, Err: &UnavailableError{Op: "watching leases", Err: context.Canceled}})
		}
	}()
	return out
}

func send(ctx context.Context, out chan<- Event, e Event) bool {
	select {
	case out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// event translates one etcd event; ok is false for keys that do not matter to peers.
func (r *Registry) event(ev *clientv3.Event) (Event, bool) {
	key := strings.TrimPrefix(string(ev.Kv.Key), r.base)
	switch {
	case strings.HasPrefix(key, leasesDir):
		if ev.Type == mvccpb.PUT {
			l, err := decodeLease(ev.Kv.Value, ev.Kv.ModRevision)
			if err != nil {
				return Event{Kind: Lost, Err: &StoreError{Op: "reading " + key, Err: err}}, true
			}
			return Event{Kind: Joined, Lease: l, HostID: l.HostID}, true
		}
		if ev.PrevKv == nil {
			return Event{Kind: Lost, Err: &StoreError{Op: "reading deleted " + key, Err: context.Canceled}}, true
		}
		l, err := decodeLease(ev.PrevKv.Value, ev.PrevKv.ModRevision)
		if err != nil {
			return Event{Kind: Lost, Err: &StoreError{Op: "reading deleted " + key, Err: err}}, true
		}
		return Event{Kind: Left, Lease: l, HostID: l.HostID}, true
	case strings.HasPrefix(key, aliveDir) && ev.Type == mvccpb.DELETE:
		return Event{Kind: Silent, HostID: strings.TrimPrefix(key, aliveDir)}, true
	}
	return Event{}, false
}

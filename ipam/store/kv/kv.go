// Package kv implements store.Store once, over any transactional key-value backend, so
// that the local (bbolt), etcd and memory stores share one allocation algorithm and
// differ only in how they run a transaction.
//
// # Layout (keys under the backend's namespace)
//
//	att/<containerID>/<ifname>   JSON store.Attachment
//	ip/<address>                 "<containerID>/<ifname>" (the owner)
//	pools                        JSON list of pool IDs ever used
//	pool/<id>                    JSON cursor: per range the next address of the sweep, and
//	                             the head and tail of the pool's free queue
//	pool/<id>/q/<seq>            an address in the free queue (seq: 16 hex digits)
//	pool/<id>/in/<address>       seq of that address in the queue
//
// # Allocation in O(1) amortised, round-robin
//
// A pool first sweeps its ranges once, in order, with a cursor (the next address to
// try): an address is handed out only when the sweep reaches it, so a released address
// is not reused while never-used ones remain. An address released behind the cursor
// goes to the tail of the pool's FIFO free queue; once the sweep is done, addresses come
// from the head of that queue, so the address released last is handed out last. Each
// step of the sweep either hands out an address or passes one that is held, and each
// queue entry is popped once, so an allocation costs a constant number of reads
// amortised, whatever the fill: it never scans from the start of a range and never
// reads every reservation. Static and requested addresses taken while queued are removed
// from the queue at once (the in/<address> index), so the queue holds free addresses only.
//
// Pools are identified by their ranges (store.Pool.ID). A config whose ranges change
// gets a new pool with a fresh sweep, which skips what is held; releases feed the queue
// of every pool whose sweep has passed the address.
//
// # Atomicity
//
// Every Store method that changes state runs as one backend transaction (Backend.Update):
// on any error, including an exhausted pool after an earlier pool of the same request
// succeeded, nothing is written. For crash tests the process can be killed in the middle
// of an allocation, after the addresses are reserved and before the attachment is
// recorded: set MOOR_TEST_FAULT=ipam/after-reserve:kill (or ":error" to fail the
// transaction there instead). The variable takes a comma-separated list of points, the
// format the plugin framework uses for its own fault points.
//
// What this package does not do: locking, durability and retries are the backend's.
package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/moornet/moor/ipam/store"
)

// Txn is one transaction of a Backend. Values are never empty strings.
type Txn interface {
	// Get returns the value of key and whether it exists.
	Get(key string) (string, bool, error)
	// Put sets key to a non-empty value.
	Put(key, value string) error
	// Delete removes key; a missing key is not an error.
	Delete(key string) error
}

// Backend runs transactions on one network's keyspace.
type Backend interface {
	// Name describes the backend in messages, e.g. "local /var/lib/moor/ipam/net1.db".
	Name() string
	// Update runs fn in a read-write transaction and commits it durably when fn returns
	// nil; when fn returns an error nothing fn wrote is kept and that error is returned
	// unchanged. It may run fn more than once (optimistic backends retry on conflict).
	Update(ctx context.Context, fn func(Txn) error) error
	// View runs fn in a read-only transaction (Put and Delete fail).
	View(ctx context.Context, fn func(Txn) error) error
	// Scan calls fn for every key with the prefix, in key order, from one consistent
	// snapshot.
	Scan(ctx context.Context, prefix string, fn func(key, value string) error) error
	// Status returns nil when the backend can be read and written now.
	Status(ctx context.Context) error
	// Destroy deletes every key, and whatever holds them (a file), atomically for
	// readers and writers of the backend; unless a key with the prefix unlessPrefix
	// exists (when it is not empty), checked in the same atomic step.
	Destroy(ctx context.Context, unlessPrefix string) error
	// Close releases connections.
	Close() error
}

// DeferredBackend is a Backend that can leave a transaction's durable commit to later:
// the caller learns what the transaction decided (the addresses) at once and overlaps the
// commit's wait for the disk with other work, reporting success only after commit
// returned nil.
type DeferredBackend interface {
	// UpdateDeferred runs fn in a read-write transaction, as Update does, but returns
	// before committing. When fn returns nil it returns commit, which must be called
	// exactly once (from any goroutine): it commits durably, as Update would have, and
	// releases what the transaction holds (locks, the open file). Until then other
	// writers wait. When fn fails nothing is kept and fn's error is returned unchanged.
	// It runs fn once.
	UpdateDeferred(ctx context.Context, fn func(Txn) error) (commit func() error, err error)
}

// Store implements store.Store over a Backend.
type Store struct {
	b Backend
}

var _ store.Store = (*Store)(nil)

// New returns a Store over b.
func New(b Backend) *Store { return &Store{b: b} }

// Backend returns the backend the store runs on.
func (s *Store) Backend() Backend { return s.b }

const (
	attPrefix  = "att/"
	ipPrefix   = "ip/"
	poolsKey   = "pools"
	poolPrefix = "pool/"
	queueDir   = "/q/"
	queuedDir  = "/in/"
	seqFormat  = "%016x"
)

func attKey(k store.Key) string { return attPrefix + k.String() }
func ipKey(a netip.Addr) string { return ipPrefix + a.String() }
func poolKey(id string) string  { return poolPrefix + id }
func queueKey(id string, seq uint64) string {
	return poolPrefix + id + queueDir + fmt.Sprintf(seqFormat, seq)
}
func queuedKey(id string, a netip.Addr) string { return poolPrefix + id + queuedDir + a.String() }

// Allocate implements store.Store.
func (s *Store) Allocate(ctx context.Context, req store.AllocRequest) (store.Attachment, error) {
	att, _, commit, err := s.AllocateDeferred(ctx, req)
	if err != nil {
		return store.Attachment{}, err
	}
	if err := commit(); err != nil {
		return store.Attachment{}, err
	}
	return att, nil
}

// AllocateDeferred implements store.DeferredAllocator: on a DeferredBackend the commit is
// left to the caller's commit; on any other backend the allocation is committed before it
// returns and commit does nothing. held is read in the allocation's own transaction.
func (s *Store) AllocateDeferred(ctx context.Context, req store.AllocRequest) (att store.Attachment, held bool, commit func() error, err error) {
	key := req.Attachment.Key
	if err := key.Validate(); err != nil {
		return store.Attachment{}, false, nil, err
	}
	fn := func(t Txn) error {
		tx := newTxn(s.b.Name(), t)
		existing, ok, err := tx.attachment(key)
		held = ok
		if err != nil || ok {
			att = existing
			return err
		}
		att, err = tx.allocate(key, req)
		return err
	}
	if d, ok := s.b.(DeferredBackend); ok {
		commit, err = d.UpdateDeferred(ctx, fn)
	} else {
		err = s.b.Update(ctx, fn)
		commit = func() error { return nil }
	}
	if err != nil {
		return store.Attachment{}, false, nil, err
	}
	return att, held, commit, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key store.Key) (store.Attachment, error) {
	if err := key.Validate(); err != nil {
		return store.Attachment{}, err
	}
	var (
		att   store.Attachment
		found bool
	)
	err := s.b.View(ctx, func(t Txn) error {
		var err error
		att, found, err = newTxn(s.b.Name(), t).attachment(key)
		return err
	})
	if err != nil {
		return store.Attachment{}, err
	}
	if !found {
		return store.Attachment{}, fmt.Errorf("attachment %s: %w", key, store.ErrNotFound)
	}
	return att, nil
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, key store.Key) ([]netip.Prefix, error) {
	if err := key.Validate(); err != nil {
		return nil, err
	}
	var freed []netip.Prefix
	err := s.b.Update(ctx, func(t Txn) error {
		var err error
		freed, err = newTxn(s.b.Name(), t).release(key)
		return err
	})
	if err != nil {
		return nil, err
	}
	return freed, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context) ([]store.Attachment, error) {
	var out []store.Attachment
	err := s.b.Scan(ctx, attPrefix, func(key, value string) error {
		var att store.Attachment
		if err := json.Unmarshal([]byte(value), &att); err != nil {
			return &store.Error{Store: s.b.Name(), Op: "decoding " + key, Err: err}
		}
		out = append(out, att)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
	return out, nil
}

// GC implements store.Store. It keeps going when one release fails and returns the
// attachments it did release together with the joined errors.
func (s *Store) GC(ctx context.Context, valid []store.Key) ([]store.Attachment, error) {
	keep := make(map[store.Key]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var (
		released []store.Attachment
		errs     []error
	)
	for _, att := range all {
		if keep[att.Key] {
			continue
		}
		if _, err := s.Release(ctx, att.Key); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s: %w", att.Key, err))
			continue
		}
		released = append(released, att)
	}
	return released, errors.Join(errs...)
}

// Status implements store.Store.
func (s *Store) Status(ctx context.Context) error { return s.b.Status(ctx) }

// Destroy implements store.Store.
func (s *Store) Destroy(ctx context.Context, opts store.DestroyOptions) error {
	unless := ""
	if opts.IfUnused {
		unless = attPrefix
	}
	return s.b.Destroy(ctx, unless)
}

// Close implements store.Store.
func (s *Store) Close() error { return s.b.Close() }

// Verify reads the whole store from one snapshot and reports every inconsistency: an
// address whose owner does not record it, an attachment address not owned by it, a
// queued address that is held or whose index entry is missing. It is for tests and
// diagnostics (moor doctor); the store never needs it to stay correct.
func (s *Store) Verify(ctx context.Context) error {
	all := map[string]string{}
	if err := s.b.Scan(ctx, "", func(k, v string) error { all[k] = v; return nil }); err != nil {
		return err
	}
	var problems []string
	owned := map[string]string{} // ip key -> owner recorded by attachments
	for k, v := range all {
		if !strings.HasPrefix(k, attPrefix) {
			continue
		}
		var att store.Attachment
		if err := json.Unmarshal([]byte(v), &att); err != nil {
			problems = append(problems, fmt.Sprintf("%s: undecodable: %v", k, err))
			continue
		}
		for _, p := range att.IPs {
			ik := ipKey(p.Addr())
			owned[ik] = att.Key.String()
			if all[ik] != att.Key.String() {
				problems = append(problems, fmt.Sprintf("%s records %s, which is owned by %q", k, p.Addr(), all[ik]))
			}
		}
	}
	for k, v := range all {
		switch {
		case strings.HasPrefix(k, ipPrefix):
			if owned[k] != v {
				problems = append(problems, fmt.Sprintf("%s owned by %s, whose attachment does not record it", k, v))
			}
		case strings.HasPrefix(k, poolPrefix) && strings.Contains(k, queueDir):
			id := strings.TrimPrefix(k[:strings.Index(k, queueDir)], poolPrefix)
			a, err := netip.ParseAddr(v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: bad address %q", k, v))
				continue
			}
			if _, held := all[ipKey(a)]; held {
				problems = append(problems, fmt.Sprintf("%s queues %s, which is held", k, v))
			}
			if seq := all[queuedKey(id, a)]; poolPrefix+id+queueDir+seq != k {
				problems = append(problems, fmt.Sprintf("%s queues %s, whose index entry is %q", k, v, seq))
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return &store.Error{Store: s.b.Name(), Op: "verify", Err: errors.New(strings.Join(problems, "; "))}
}

// stamp returns the creation time to record.
func stamp(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().UTC()
	}
	return t
}

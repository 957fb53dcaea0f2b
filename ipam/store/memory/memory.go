// Package memory is an in-memory store.Store for tests: the full contract (atomic
// allocation, keys on container ID and interface name, round-robin, GC) with nothing
// persisted. It runs the same allocation code as the local and etcd stores (package kv)
// over a map guarded by one mutex; a transaction writes to an overlay that is applied
// only when it succeeds.
package memory

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/kv"
)

// Store is an in-memory store.Store.
type Store struct {
	*kv.Store
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{Store: kv.New(NewBackend())} }

// NewBackend returns the bare map backend, for tests that wrap it (e.g. to count reads).
func NewBackend() kv.Backend { return &backend{data: map[string]string{}} }

// ErrClosed is returned by every operation after Close.
var ErrClosed = errors.New("memory store closed")

type backend struct {
	mu     sync.Mutex
	data   map[string]string
	closed bool
}

func (b *backend) Name() string { return "memory" }

// Update runs fn under the lock and applies its writes only if it succeeds.
func (b *backend) Update(ctx context.Context, fn func(kv.Txn) error) error {
	return b.run(ctx, true, fn)
}

// View runs fn under the lock with writes refused.
func (b *backend) View(ctx context.Context, fn func(kv.Txn) error) error {
	return b.run(ctx, false, fn)
}

func (b *backend) run(ctx context.Context, writable bool, fn func(kv.Txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	t := &txn{base: b.data, writes: map[string]*string{}, writable: writable}
	if err := fn(t); err != nil {
		return err
	}
	for k, v := range t.writes {
		if v == nil {
			delete(b.data, k)
		} else {
			b.data[k] = *v
		}
	}
	return nil
}

func (b *backend) Scan(ctx context.Context, prefix string, fn func(key, value string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	var keys []string
	snapshot := map[string]string{}
	for k, v := range b.data {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
			snapshot[k] = v
		}
	}
	b.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, snapshot[k]); err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) Status(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// Destroy empties the map, unless a key has unlessPrefix.
func (b *backend) Destroy(ctx context.Context, unlessPrefix string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if unlessPrefix != "" {
		for k := range b.data {
			if strings.HasPrefix(k, unlessPrefix) {
				return nil
			}
		}
	}
	clear(b.data)
	return ctx.Err()
}

func (b *backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// txn reads through its own writes (nil value: deleted) to the base map.
type txn struct {
	base     map[string]string
	writes   map[string]*string
	writable bool
}

var errReadOnly = errors.New("write in a read-only transaction")

func (t *txn) Get(key string) (string, bool, error) {
	if v, ok := t.writes[key]; ok {
		if v == nil {
			return "", false, nil
		}
		return *v, true, nil
	}
	v, ok := t.base[key]
	return v, ok, nil
}

func (t *txn) Put(key, value string) error {
	if !t.writable {
		return errReadOnly
	}
	t.writes[key] = &value
	return nil
}

func (t *txn) Delete(key string) error {
	if !t.writable {
		return errReadOnly
	}
	t.writes[key] = nil
	return nil
}

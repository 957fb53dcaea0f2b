// Package etcdkv is the IPAM store for networks that span hosts: the allocation code of
// package kv over etcd v3, so that several hosts allocate from one pool without handing
// out an address twice. Only moor-ipam-etcd, moor-overlay and the moor CLI link it (through
// ipam/allocator/etcdstore); moor-ipam and the drivers exec moor-ipam-etcd for a network
// whose ipam.store.type is "etcd", so that they do not carry the etcd client.
//
// Every change is one etcd transaction built by the client's software transactional
// memory (go.etcd.io/etcd/client/v3/concurrency, serializable-snapshot isolation): the
// transaction commits only if every key it read is unchanged, and a key it read as
// absent must still be absent (ModRevision == 0), so reserving an address is a
// create-if-absent. On conflict the transaction is re-run with fresh reads.
//
// Every operation, retries included, is bounded by the request timeout
// (Options.Etcd.RequestTimeout): when etcd cannot be reached or has no leader, the
// operation returns a *store.UnavailableError (CNI code 11, try again later) after at most
// that time, naming the operation and the timeout. Keys live under Options.Prefix (e.g.
// /moor/ipam/<network>/), in the layout of package kv. The client comes from
// plugins/etcdclient, like every moor etcd client.
//
// What it does not do: create or manage the etcd cluster, or hold leases (allocations
// live until released or collected by GC).
package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/kv"
	"github.com/moornet/moor/plugins/etcdclient"
	"github.com/moornet/moor/plugins/etcdconf"
)

const (
	scanPageSize = 500
	statusKey    = "status"
)

// Options configure an etcd store.
type Options struct {
	// Etcd is how to reach etcd (etcdconf: endpoints, TLS, timeouts; zero timeouts take
	// the defaults). Its RequestTimeout bounds every operation.
	Etcd etcdconf.Config
	// Prefix is prepended to every key; it should end in "/" and name the network.
	Prefix string
}

// Store is a store.Store in etcd.
type Store struct {
	*kv.Store
}

var _ store.Store = (*Store)(nil)

// Open creates the client (etcdclient.New: TLS files that cannot be loaded are code 7
// naming the tls field). It does not wait for a connection: an unreachable cluster shows
// up as *store.UnavailableError from the first operation (or from Status).
func Open(opts Options) (*Store, error) {
	if len(opts.Etcd.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	if opts.Etcd.RequestTimeout <= 0 {
		opts.Etcd.RequestTimeout = etcdconf.DefaultRequestTimeout
	}
	cli, err := etcdclient.New(opts.Etcd)
	if err != nil {
		return nil, err
	}
	b := &backend{
		cli:     cli,
		prefix:  opts.Prefix,
		timeout: opts.Etcd.RequestTimeout,
		name:    opts.Etcd.Name() + " " + opts.Prefix,
	}
	return &Store{Store: kv.New(b)}, nil
}

type backend struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration
	name    string
}

func (b *backend) Name() string { return b.name }

// classify turns a client error into UnavailableError (no answer in time, no leader,
// connection refused) or store.Error.
func (b *backend) classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if etcdclient.Unavailable(err) {
		return &store.UnavailableError{Store: b.name, Err: fmt.Errorf("%s: no answer within %s: %w", op, b.timeout, err)}
	}
	return &store.Error{Store: b.name, Op: op, Err: err}
}

// Update implements kv.Backend with an STM transaction.
func (b *backend) Update(ctx context.Context, fn func(kv.Txn) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var fnErr error
	_, err := concurrency.NewSTM(b.cli, func(s concurrency.STM) error {
		fnErr = fn(&stmTxn{s: s, prefix: b.prefix})
		return fnErr
	}, concurrency.WithAbortContext(ctx))
	if err != nil && err == fnErr {
		return err
	}
	return b.classify("transaction", err)
}

// View implements kv.Backend with plain linearizable reads.
func (b *backend) View(ctx context.Context, fn func(kv.Txn) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	t := &readTxn{ctx: ctx, b: b}
	if err := fn(t); err != nil {
		return err
	}
	return t.err
}

// Scan implements kv.Backend: pages of a range read, all at the revision of the first.
func (b *backend) Scan(ctx context.Context, prefix string, fn func(key, value string) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	full := b.prefix + prefix
	end := clientv3.GetPrefixRangeEnd(full)
	from, rev := full, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(scanPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := b.cli.Get(ctx, from, opts...)
		if err != nil {
			return b.classify("listing "+full, err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			if err := fn(strings.TrimPrefix(string(kv.Key), b.prefix), string(kv.Value)); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Status does one linearizable read, which needs a leader and a quorum.
func (b *backend) Status(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_, err := b.cli.Get(ctx, b.prefix+statusKey)
	return b.classify("status", err)
}

// Destroy deletes every key under the network's prefix in one transaction, guarded by
// "no key under prefix+unlessPrefix" when unlessPrefix is set.
func (b *backend) Destroy(ctx context.Context, unlessPrefix string) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	txn := b.cli.Txn(ctx)
	if unlessPrefix != "" {
		// A range compare with no key in the range compares against a zero key: true.
		txn = txn.If(clientv3.Compare(clientv3.CreateRevision(b.prefix+unlessPrefix), "=", 0).WithPrefix())
	}
	_, err := txn.Then(clientv3.OpDelete(b.prefix, clientv3.WithPrefix())).Commit()
	return b.classify("deleting "+b.prefix, err)
}

func (b *backend) Close() error { return b.cli.Close() }

// stmTxn adapts an STM. The STM reads "" for a missing key; kv never stores "".
type stmTxn struct {
	s      concurrency.STM
	prefix string
}

func (t *stmTxn) Get(key string) (string, bool, error) {
	v := t.s.Get(t.prefix + key)
	return v, v != "", nil
}

func (t *stmTxn) Put(key, value string) error {
	t.s.Put(t.prefix+key, value)
	return nil
}

func (t *stmTxn) Delete(key string) error {
	t.s.Del(t.prefix + key)
	return nil
}

// readTxn serves View: reads go to etcd, writes are refused.
type readTxn struct {
	ctx context.Context
	b   *backend
	err error
}

var errReadOnly = errors.New("write in a read-only transaction")

func (t *readTxn) Get(key string) (string, bool, error) {
	resp, err := t.b.cli.Get(t.ctx, t.b.prefix+key)
	if err != nil {
		t.err = t.b.classify("reading "+key, err)
		return "", false, t.err
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

func (t *readTxn) Put(string, string) error { return errReadOnly }
func (t *readTxn) Delete(string) error      { return errReadOnly }

// Package local is the default moor-ipam store: one bbolt file per network,
// <dataDir>/<network>.db (dataDir defaults to /var/lib/moor/ipam), running the shared
// allocation code of package kv.
//
// Durability and safety across processes:
//   - every change is one bbolt read-write transaction, fsynced on commit; a process
//     killed in the middle leaves the file as it was before the transaction. An
//     allocation may leave bbolt's commit (the same one, same file format) to its
//     caller (UpdateDeferred, store.DeferredAllocator): the lock is held until then, and
//     the caller reports success only after it;
//   - the file is opened for each operation and closed after it, so that plugin
//     processes never keep it (or its lock) beyond the operation;
//   - writers take an exclusive flock on <file>.lock, readers a shared one, waiting at
//     most Options.LockTimeout; a timeout is a *store.UnavailableError (CNI code 11, try
//     again later). The wait is a blocking flock (woken by the kernel as soon as the lock
//     is free), not bbolt's 50 ms polling;
//   - the directory is created 0700 and the files 0600: addresses and container names are
//     for root alone. An existing directory keeps its mode, but the directory and the
//     files go through package statefs: a symbolic link at <network>.db or its lock is
//     never followed, and a directory not owned by root or writable by others is
//     refused (*statefs.UnsafeError, code 7 naming the path).
//
// What it does not do: share state between hosts (use package etcd), or keep the file
// open between operations (each costs an open and a map of the file; see the
// benchmarks in package allocator).
package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/moornet/moor/plugins/flock"
	"github.com/moornet/moor/plugins/statefs"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/kv"
)

// DefaultLockTimeout bounds the wait for another process's transaction.
const DefaultLockTimeout = 10 * time.Second

const (
	dirMode    fs.FileMode = 0o700
	fileMode   fs.FileMode = 0o600
	lockSuffix             = ".lock"
)

// bucket holds every key of the network (one file per network, so one bucket).
var bucket = []byte("moor-ipam")

// Options configure a local store.
type Options struct {
	// Path is the bbolt file, e.g. /var/lib/moor/ipam/net1.db.
	Path string
	// LockTimeout bounds the wait for the file's lock; 0 means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Store is a store.Store in a bbolt file.
type Store struct {
	*kv.Store
}

var _ store.Store = (*Store)(nil)

// Open returns the store of the file at opts.Path. It does no I/O: the directory and the
// file are created by the first write, and Status reports whether that can succeed.
func Open(opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("local store: empty path")
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	b := &backend{path: opts.Path, lockTimeout: opts.LockTimeout, name: "local " + opts.Path}
	return &Store{Store: kv.New(b)}, nil
}

type backend struct {
	path        string
	name        string
	lockTimeout time.Duration
}

func (b *backend) Name() string { return b.name }

// fail wraps err as a store failure (code 108); an unsafe path keeps its own code 7.
func (b *backend) fail(op string, err error) error {
	var unsafe *statefs.UnsafeError
	if errors.As(err, &unsafe) {
		return err
	}
	return &store.Error{Store: b.name, Op: op, Err: err}
}

// open locks the file and opens it; close undoes both.
func (b *backend) open(ctx context.Context, writable bool) (db *bbolt.DB, closeFn func(), err error) {
	if writable {
		if err := statefs.MkdirAll(filepath.Dir(b.path), dirMode); err != nil {
			return nil, nil, b.fail("creating the data directory", err)
		}
	}
	unlock, err := flock.Lock(ctx, b.path+lockSuffix, flock.Options{Shared: !writable, NoCreate: !writable, Timeout: b.lockTimeout})
	if err != nil {
		if errors.Is(err, flock.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, &store.UnavailableError{Store: b.name, Err: err}
		}
		if !writable && errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		return nil, nil, b.fail("locking", err)
	}
	db, err = bbolt.Open(b.path, fileMode, &bbolt.Options{Timeout: b.lockTimeout, ReadOnly: !writable, OpenFile: statefs.OpenFile})
	if err != nil {
		unlock()
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, nil, &store.UnavailableError{Store: b.name, Err: fmt.Errorf("file lock not obtained within %s", b.lockTimeout)}
		case !writable && errors.Is(err, fs.ErrNotExist):
			return nil, nil, err
		}
		return nil, nil, b.fail("opening", err)
	}
	return db, func() { _ = db.Close(); unlock() }, nil
}

// Update implements kv.Backend: one fsynced bbolt transaction.
func (b *backend) Update(ctx context.Context, fn func(kv.Txn) error) error {
	commit, err := b.UpdateDeferred(ctx, fn)
	if err != nil {
		return err
	}
	return commit()
}

// UpdateDeferred implements kv.DeferredBackend: fn runs in a bbolt read-write
// transaction of the locked file; commit is bbolt's own (pages written and fdatasynced,
// then the meta page written and fdatasynced), then the file is closed and unlocked. The
// file's format and bbolt's crash safety are unchanged: only the moment the caller waits
// for them moves.
func (b *backend) UpdateDeferred(ctx context.Context, fn func(kv.Txn) error) (func() error, error) {
	db, closeFn, err := b.open(ctx, true)
	if err != nil {
		return nil, err
	}
	tx, err := db.Begin(true)
	if err != nil {
		closeFn()
		return nil, b.fail("committing", err)
	}
	abort := func(err error) (func() error, error) {
		_ = tx.Rollback()
		closeFn()
		return nil, err
	}
	bk, err := tx.CreateBucketIfNotExists(bucket)
	if err != nil {
		return abort(b.fail("committing", err))
	}
	if err := fn(&txn{bk: bk}); err != nil {
		return abort(err)
	}
	return func() error {
		defer closeFn()
		if err := tx.Commit(); err != nil {
			return b.fail("committing", err)
		}
		return nil
	}, nil
}

// View implements kv.Backend. A file that does not exist yet reads as empty.
func (b *backend) View(ctx context.Context, fn func(kv.Txn) error) error {
	db, closeFn, err := b.open(ctx, false)
	if errors.Is(err, fs.ErrNotExist) {
		return fn(&txn{})
	}
	if err != nil {
		return err
	}
	defer closeFn()
	var fnErr error
	err = db.View(func(tx *bbolt.Tx) error {
		fnErr = fn(&txn{bk: tx.Bucket(bucket)})
		return fnErr
	})
	if err != nil && fnErr == nil {
		return b.fail("reading", err)
	}
	return err
}

// Scan implements kv.Backend with a cursor over one read transaction.
func (b *backend) Scan(ctx context.Context, prefix string, fn func(key, value string) error) error {
	return b.View(ctx, func(t kv.Txn) error {
		bk := t.(*txn).bk
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			if err := fn(string(k), string(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Status opens the file for writing (creating directory and file if needed) within
// the lock timeout.
func (b *backend) Status(ctx context.Context) error {
	db, closeFn, err := b.open(ctx, true)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		return b.fail("writing", err)
	}
	return nil
}

// Destroy removes the file and then its lock file, holding the lock: a process that
// waited for the lock finds its lock file gone and starts over on a new one (package
// flock), so nobody writes into a removed file. With unlessPrefix, the file is read
// under the same lock first.
func (b *backend) Destroy(ctx context.Context, unlessPrefix string) error {
	unlock, err := flock.Lock(ctx, b.path+lockSuffix, flock.Options{NoCreate: true, Timeout: b.lockTimeout})
	if errors.Is(err, fs.ErrNotExist) {
		// Never written under a lock: at most a file without its lock is left.
		if err := os.Remove(b.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return b.fail("removing", err)
		}
		return nil
	}
	if err != nil {
		if errors.Is(err, flock.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return &store.UnavailableError{Store: b.name, Err: err}
		}
		return b.fail("locking", err)
	}
	defer unlock()
	if unlessPrefix != "" {
		used, err := b.hasPrefix(unlessPrefix)
		if err != nil || used {
			return err
		}
	}
	for _, p := range []string{b.path, b.path + lockSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return b.fail("removing", err)
		}
	}
	return nil
}

// hasPrefix reports whether the file holds a key with prefix; the caller holds the lock.
func (b *backend) hasPrefix(prefix string) (bool, error) {
	db, err := bbolt.Open(b.path, fileMode, &bbolt.Options{Timeout: b.lockTimeout, ReadOnly: true, OpenFile: statefs.OpenFile})
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, b.fail("opening", err)
	}
	defer db.Close()
	var found bool
	err = db.View(func(tx *bbolt.Tx) error {
		if bk := tx.Bucket(bucket); bk != nil {
			k, _ := bk.Cursor().Seek([]byte(prefix))
			found = k != nil && strings.HasPrefix(string(k), prefix)
		}
		return nil
	})
	if err != nil {
		return false, b.fail("reading", err)
	}
	return found, nil
}

// Close implements kv.Backend; nothing stays open between operations.
func (b *backend) Close() error { return nil }

// txn adapts a bbolt bucket; a nil bucket is an empty read-only store.
type txn struct{ bk *bbolt.Bucket }

var errNoBucket = errors.New("write in a read-only transaction")

func (t *txn) Get(key string) (string, bool, error) {
	if t.bk == nil {
		return "", false, nil
	}
	v := t.bk.Get([]byte(key))
	if v == nil {
		return "", false, nil
	}
	return string(v), true, nil
}

func (t *txn) Put(key, value string) error {
	if t.bk == nil || !t.bk.Writable() {
		return errNoBucket
	}
	return t.bk.Put([]byte(key), []byte(value))
}

func (t *txn) Delete(key string) error {
	if t.bk == nil || !t.bk.Writable() {
		return errNoBucket
	}
	return t.bk.Delete([]byte(key))
}

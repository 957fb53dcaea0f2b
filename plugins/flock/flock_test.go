package flock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moornet/moor/plugins/flock"
)

func TestExclusiveWaitsAndTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.lock")
	ctx := context.Background()
	release, err := flock.Lock(ctx, path, flock.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = flock.Lock(ctx, path, flock.Options{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, flock.ErrTimeout) {
		t.Fatalf("second exclusive lock: %v, want ErrTimeout", err)
	}
	_, err = flock.Lock(ctx, path, flock.Options{Shared: true, Timeout: 50 * time.Millisecond})
	if !errors.Is(err, flock.ErrTimeout) {
		t.Fatalf("shared lock under an exclusive one: %v, want ErrTimeout", err)
	}
	got := make(chan error, 1)
	go func() {
		r, err := flock.Lock(ctx, path, flock.Options{Timeout: 10 * time.Second})
		if err == nil {
			r()
		}
		got <- err
	}()
	release()
	if err := <-got; err != nil {
		t.Fatalf("a waiter did not get the released lock: %v", err)
	}
}

func TestSharedLocksCoexist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	ctx := context.Background()
	r1, err := flock.Lock(ctx, path, flock.Options{Shared: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r1()
	r2, err := flock.Lock(ctx, path, flock.Options{Shared: true, Timeout: time.Second, NoCreate: true})
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	r2()
	if _, err := flock.Lock(ctx, filepath.Join(t.TempDir(), "none.lock"), flock.Options{NoCreate: true, Timeout: time.Second}); err == nil {
		t.Error("NoCreate on a missing file succeeded")
	}
}

// A holder that removes the lock file before releasing it (a store destroying its
// state) does not split the lock: the waiter starts over on the new file, and holds the
// lock everyone else now contends for.
func TestRemovedLockFileIsNotSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	ctx := context.Background()
	release, err := flock.Lock(ctx, path, flock.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		release func()
		err     error
	}
	got := make(chan result, 1)
	go func() {
		r, err := flock.Lock(ctx, path, flock.Options{Timeout: 30 * time.Second})
		got <- result{r, err}
	}()
	// The waiter blocks in the kernel on the old file; let it get there (correctness
	// does not depend on it: a waiter that opens after the removal uses the new file).
	time.Sleep(50 * time.Millisecond)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	release()
	r := <-got
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	defer r.release()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the waiter holds no file at the path: %v", err)
	}
	if _, err := flock.Lock(ctx, path, flock.Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, flock.ErrTimeout) {
		t.Fatalf("a third locker got the lock beside the waiter: %v", err)
	}
}

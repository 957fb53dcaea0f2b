package flock_test

import (
	"context"
	"errors"
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

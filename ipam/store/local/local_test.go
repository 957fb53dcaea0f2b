package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/ipam/store/storetest"
	"github.com/moornet/moor/plugins/codes"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		st, err := local.Open(local.Options{Path: filepath.Join(t.TempDir(), "ipam", "net1.db")})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
}

func open(t *testing.T, path string, timeout time.Duration) *local.Store {
	t.Helper()
	st, err := local.Open(local.Options{Path: path, LockTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestPersistsAcrossOpensWithModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "moor", "ipam")
	path := filepath.Join(dir, "net1.db")
	ctx := context.Background()
	st := open(t, path, 0)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open created the file before any write: %v", err)
	}
	att, err := st.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")},
		Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + ".lock": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	again := open(t, path, 0)
	got, err := again.Get(ctx, storetest.Key("c1"))
	if err != nil || got.IPs[0] != att.IPs[0] {
		t.Fatalf("reopened store: %v, %v; want %v", got.IPs, err, att.IPs)
	}
	// The cursor persists too: the next address follows.
	next, err := again.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c2")},
		Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}})
	if err != nil || next.IPs[0].Addr().String() != "10.0.0.3" {
		t.Fatalf("second allocation after reopen: %v, %v", next.IPs, err)
	}
}

func TestReadsOfAMissingFile(t *testing.T) {
	st := open(t, filepath.Join(t.TempDir(), "none.db"), 0)
	ctx := context.Background()
	if list, err := st.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List of a missing file: %v, %v", list, err)
	}
	if _, err := st.Get(ctx, storetest.Key("c")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a missing file: %v", err)
	}
	if ips, err := st.Release(ctx, storetest.Key("c")); err != nil || ips != nil {
		t.Fatalf("Release on a missing file: %v, %v", ips, err)
	}
}

// Another process (here: another open file description) holding the file makes
// operations fail with code 11 after the lock timeout.
func TestLockTimeoutIsTryAgainLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net1.db")
	st := open(t, path, 200*time.Millisecond)
	ctx := context.Background()
	if err := st.Status(ctx); err != nil {
		t.Fatal(err)
	}
	unlock := holdLock(t, path+".lock")
	_, err := st.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")},
		Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}})
	if storetest.CodeOf(err) != codes.TryAgainLater {
		t.Fatalf("Allocate while locked: %v (code %d), want code 11", err, storetest.CodeOf(err))
	}
	if err := st.Status(ctx); storetest.CodeOf(err) != codes.TryAgainLater {
		t.Fatalf("Status while locked: %v", err)
	}
	unlock()
	if _, err := st.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c1")},
		Pools: []store.Pool{storetest.Pool("10.0.0.0/24")}}); err != nil {
		t.Fatalf("Allocate after the lock is released: %v", err)
	}
	// bbolt's own file lock is honoured too (e.g. an operator's bbolt tool).
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := st.Release(ctx, storetest.Key("c1")); storetest.CodeOf(err) != codes.TryAgainLater {
		t.Fatalf("Release while bbolt holds the file: %v", err)
	}
}

func TestStatusOfAnUnusableDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st := open(t, filepath.Join(file, "ipam", "net1.db"), 0)
	err := st.Status(context.Background())
	if storetest.CodeOf(err) != codes.StoreFailure {
		t.Fatalf("Status with dataDir under a file: %v, want code 108", err)
	}
}

// holdLock takes the exclusive flock another moor process would hold.
func holdLock(t *testing.T, path string) (unlock func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return func() { _ = f.Close() }
}

// AllocateDeferred decides the addresses in a transaction that holds the file's lock
// until commit: another writer waits for it, and sees the first allocation afterwards.
// held says whether the key held its attachment already, read in the same transaction.
// A failed allocation leaves no commit to call and the lock free.
func TestAllocateDeferred(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam", "net1.db")
	ctx := context.Background()
	st := open(t, path, 0)
	pool := []store.Pool{storetest.Pool("10.0.0.0/29")}
	req := func(id string) store.AllocRequest {
		return store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key(id)}, Pools: pool}
	}
	att, held, commit, err := st.AllocateDeferred(ctx, req("c1"))
	if err != nil || held {
		t.Fatalf("first AllocateDeferred: held %v, %v", held, err)
	}
	other := make(chan store.Attachment, 1)
	go func() {
		a, err := open(t, path, 0).Allocate(ctx, req("c2"))
		if err != nil {
			t.Errorf("second writer: %v", err)
		}
		other <- a
	}()
	select {
	case a := <-other:
		t.Fatalf("a second writer allocated %v before the first one's commit", a.IPs)
	case <-time.After(200 * time.Millisecond):
	}
	if err := commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
	var second store.Attachment
	select {
	case second = <-other:
	case <-time.After(30 * time.Second):
		t.Fatal("the second writer still waits after the commit")
	}
	if len(att.IPs) != 1 || len(second.IPs) != 1 || att.IPs[0] == second.IPs[0] {
		t.Fatalf("addresses %v and %v", att.IPs, second.IPs)
	}
	again, held, commit, err := open(t, path, 0).AllocateDeferred(ctx, req("c1"))
	if err != nil || !held || again.IPs[0] != att.IPs[0] {
		t.Fatalf("repeated AllocateDeferred: %v held %v, %v; want %v held", again.IPs, held, err, att.IPs)
	}
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	taken := store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key("c3")}, Static: att.IPs}
	if _, _, commit, err := st.AllocateDeferred(ctx, taken); err == nil || commit != nil {
		t.Fatalf("AllocateDeferred of an address in use: %v (commit %v)", err, commit != nil)
	}
	if got, err := open(t, path, time.Second).Get(ctx, storetest.Key("c2")); err != nil || got.IPs[0] != second.IPs[0] {
		t.Fatalf("after the failed allocation: %+v, %v (lock left held?)", got, err)
	}
}

package kv_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/kv"
	"github.com/moornet/moor/ipam/store/memory"
	"github.com/moornet/moor/ipam/store/storetest"
)

// counting wraps a backend and counts the reads of each transaction.
type counting struct {
	kv.Backend
	reads int
}

type countingTxn struct {
	kv.Txn
	c *counting
}

func (t countingTxn) Get(key string) (string, bool, error) {
	t.c.reads++
	return t.Txn.Get(key)
}

func (c *counting) Update(ctx context.Context, fn func(kv.Txn) error) error {
	c.reads = 0
	return c.Backend.Update(ctx, func(t kv.Txn) error { return fn(countingTxn{t, c}) })
}

var ctx = context.Background()

// readsPerAllocation is the most reads one allocation from one pool may take when no
// held address is in the way: attachment, pool cursor, pool index, the address, its
// queue entry.
const readsPerAllocation = 5

func allocate(t *testing.T, st *kv.Store, id string, p store.Pool) {
	t.Helper()
	if _, err := st.Allocate(ctx, store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key(id)}, Pools: []store.Pool{p}}); err != nil {
		t.Fatal(err)
	}
}

// The cost of an allocation does not grow with the fill: the same handful of reads at
// 10 and at 3000 addresses in use, by the sweep and, once the range is used up, from the
// free queue.
func TestAllocationReadsDoNotGrowWithFill(t *testing.T) {
	c := &counting{Backend: memory.NewBackend()}
	st := kv.New(c)
	p := storetest.Pool("10.0.0.0/20") // 4093 usable addresses

	for i := 0; i < 3000; i++ {
		allocate(t, st, fmt.Sprint("c", i), p)

		if c.reads > readsPerAllocation {
			t.Fatalf("allocation %d took %d reads", i, c.reads)
		}
	}
	// Fill the rest, then free every third address: allocations now come from the queue.
	for i := 3000; i < 4093; i++ {
		allocate(t, st, fmt.Sprint("c", i), p)
	}
	for i := 0; i < 4093; i += 3 {
		if _, err := st.Release(ctx, storetest.Key(fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 1000; i++ {
		allocate(t, st, fmt.Sprint("q", i), p)
		if c.reads > readsPerAllocation+1 { // + the queue slot
			t.Fatalf("queue allocation %d took %d reads", i, c.reads)
		}
	}
	if err := st.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// Held addresses ahead of the cursor are each passed once: n static reservations
// cost n extra reads in total, not per allocation.
func TestHeldAddressesArePassedOnce(t *testing.T) {
	c := &counting{Backend: memory.NewBackend()}
	st := kv.New(c)
	p := storetest.Pool("10.0.0.0/24")
	for i := 10; i < 60; i++ {
		req := store.AllocRequest{Attachment: store.Attachment{Key: storetest.Key(fmt.Sprint("s", i))}}
		req.Pools = []store.Pool{p}
		req.Pools[0].Requested = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		if _, err := st.Allocate(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for i := 0; i < 100; i++ {
		allocate(t, st, fmt.Sprint("d", i), p)
		total += c.reads
	}
	if limit := 100*readsPerAllocation + 50*2; total > limit {
		t.Fatalf("100 allocations past 50 held addresses took %d reads, want at most %d", total, limit)
	}
}

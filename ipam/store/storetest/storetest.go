// Package storetest is the contract every store.Store implementation passes: the same
// tests run against the memory, local (bbolt) and etcd stores, each from its own
// package's tests with storetest.Run(t, newStore).
//
// The contract: allocation keyed on (container ID, interface name); idempotent
// Allocate per key; static and requested addresses refused with code 101 when held by
// another key; addresses outside the pool refused with 102; exhaustion refused with 100
// and the message "pool <ranges>: N of M addresses in use"; nothing reserved by a
// failed Allocate (also when an earlier pool of the same request succeeded); gateway,
// network and broadcast addresses never handed out; round-robin reuse (a released
// address waits behind every never-used one, then in release order); Release
// repeatable and fine on unknown keys; GC releasing exactly the keys not in the valid
// list; Status nil on a healthy store; concurrent allocations never sharing an address;
// Destroy leaving an empty store that allocates afresh, repeatable and fine on a store
// never written.
// After each test a store that can verify itself (a Verify(ctx) error method, as kv
// stores have) must find no inconsistency.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins/codes"
)

// Verifier is implemented by stores that can check their own consistency.
type Verifier interface {
	Verify(ctx context.Context) error
}

// Run runs the contract against stores made by newStore, one fresh empty store per
// subtest. Run closes them.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	for _, tc := range contract {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			defer st.Close()
			c := &checker{t: t, st: st, ctx: context.Background()}
			tc.run(c)
			if v, ok := st.(Verifier); ok {
				if err := v.Verify(c.ctx); err != nil {
					t.Errorf("store inconsistent after the test: %v", err)
				}
			}
		})
	}
}

var contract = []struct {
	name string
	run  func(c *checker)
}{
	{"AllocateRecordsAttachment", testRecordsAttachment},
	{"IdempotentPerKey", testIdempotent},
	{"KeyedOnContainerAndIfName", testKeyedOnIfName},
	{"DualStack", testDualStack},
	{"StaticAddressHeldTwice", testStaticConflict},
	{"RequestedAddress", testRequested},
	{"RequestedOutsidePoolOrSkipped", testRequestedOutOfRange},
	{"Exhaustion", testExhaustion},
	{"FailedRequestReservesNothing", testAtomicMultiPool},
	{"RoundRobin", testRoundRobin},
	{"StaticTakesQueuedAddress", testStaticFromQueue},
	{"RangesChange", testRangesChange},
	{"ReleaseRepeatable", testReleaseRepeatable},
	{"GC", testGC},
	{"Status", testStatus},
	{"ConcurrentAllocations", testConcurrent},
	{"InvalidKey", testInvalidKey},
	{"Destroy", testDestroy},
}

// checker wraps a store with assertion helpers.
type checker struct {
	t   *testing.T
	st  store.Store
	ctx context.Context
}

// Pool builds a pool over subnet with host-local's defaults: addresses from network+1
// to the last address (IPv6) or broadcast-1 (IPv4); gateway network+1 (skipped), and the
// IPv4 network and broadcast addresses skipped.
func Pool(subnet string) store.Pool {
	p := netip.MustParsePrefix(subnet)
	first, last := p.Addr().Next(), store.LastAddr(p)
	skip := []netip.Addr{first}
	if p.Addr().Is4() {
		skip = append(skip, p.Addr(), last)
		last = last.Prev()
	}
	return store.Pool{Ranges: []store.Range{{Subnet: p, First: first, Last: last, Skip: skip}}}
}

// Key returns the key (id, "eth0").
func Key(id string) store.Key { return store.Key{ContainerID: id, IfName: "eth0"} }

func req(k store.Key, pools ...store.Pool) store.AllocRequest {
	return store.AllocRequest{Attachment: store.Attachment{Key: k}, Pools: pools}
}

func requested(p store.Pool, addr string) store.Pool {
	p.Requested = netip.MustParseAddr(addr)
	return p
}

func (c *checker) alloc(r store.AllocRequest) store.Attachment {
	c.t.Helper()
	att, err := c.st.Allocate(c.ctx, r)
	if err != nil {
		c.t.Fatalf("Allocate(%s): %v", r.Attachment.Key, err)
	}
	return att
}

// allocAddr allocates for key from pools and returns the addresses as strings.
func (c *checker) allocAddr(k store.Key, pools ...store.Pool) string {
	c.t.Helper()
	return addrs(c.alloc(req(k, pools...)).IPs)
}

func addrs(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ","
		}
		s += p.Addr().String()
	}
	return s
}

// refuse asserts Allocate fails with code and that key then holds nothing.
func (c *checker) refuse(r store.AllocRequest, code uint) error {
	c.t.Helper()
	att, err := c.st.Allocate(c.ctx, r)
	if err == nil {
		c.t.Fatalf("Allocate(%s) = %v, want an error with code %d", r.Attachment.Key, att.IPs, code)
	}
	if got := CodeOf(err); got != code {
		c.t.Fatalf("Allocate(%s): code %d (%v), want %d", r.Attachment.Key, got, err, code)
	}
	if r.Attachment.Key.Validate() == nil {
		c.absent(r.Attachment.Key)
	}
	return err
}

func (c *checker) absent(k store.Key) {
	c.t.Helper()
	if att, err := c.st.Get(c.ctx, k); !errors.Is(err, store.ErrNotFound) {
		c.t.Fatalf("Get(%s) = %v, %v; want ErrNotFound", k, att.IPs, err)
	}
}

func (c *checker) holds(k store.Key, want string) {
	c.t.Helper()
	att, err := c.st.Get(c.ctx, k)
	if err != nil {
		c.t.Fatalf("Get(%s): %v", k, err)
	}
	if got := addrs(att.IPs); got != want {
		c.t.Fatalf("Get(%s) holds %s, want %s", k, got, want)
	}
}

func (c *checker) release(k store.Key) []netip.Prefix {
	c.t.Helper()
	ips, err := c.st.Release(c.ctx, k)
	if err != nil {
		c.t.Fatalf("Release(%s): %v", k, err)
	}
	return ips
}

func (c *checker) expect(what, got, want string) {
	c.t.Helper()
	if got != want {
		c.t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

// CodeOf returns the CNI code an error carries, or 0.
func CodeOf(err error) uint {
	var coded codes.Coded
	if errors.As(err, &coded) {
		return coded.CNICode()
	}
	return 0
}

func testRecordsAttachment(c *checker) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	in := store.Attachment{Key: Key("c1"), Netns: "/run/netns/c1", ContainerName: "web",
		PodNamespace: "default", MAC: "02:00:00:00:00:01", Created: created}
	att := c.alloc(store.AllocRequest{Attachment: in, Pools: []store.Pool{Pool("10.0.0.0/24")}})
	c.expect("first address", fmt.Sprint(att.IPs), "[10.0.0.2/24]")
	got, err := c.st.Get(c.ctx, Key("c1"))
	if err != nil {
		c.t.Fatal(err)
	}
	in.IPs = att.IPs
	if !got.Created.Equal(created) {
		c.t.Fatalf("Created = %v, want %v", got.Created, created)
	}
	got.Created = created
	if fmt.Sprint(got) != fmt.Sprint(in) {
		c.t.Fatalf("Get = %+v, want %+v", got, in)
	}
	list, err := c.st.List(c.ctx)
	if err != nil || len(list) != 1 || list[0].Key != Key("c1") {
		c.t.Fatalf("List = %+v, %v", list, err)
	}
	// A zero Created is stamped by the store.
	att = c.alloc(req(Key("c2"), Pool("10.0.0.0/24")))
	if time.Since(att.Created) > time.Hour || att.Created.IsZero() {
		c.t.Fatalf("Created not stamped: %v", att.Created)
	}
}

func testIdempotent(c *checker) {
	first := c.allocAddr(Key("c1"), Pool("10.0.0.0/24"))
	// Same key, another request: same addresses back, nothing new reserved.
	again := c.allocAddr(Key("c1"), Pool("10.0.0.0/24"), Pool("fd00::/64"))
	c.expect("second ADD of the same key", again, first)
	c.expect("next key", c.allocAddr(Key("c2"), Pool("10.0.0.0/24")), "10.0.0.3")
}

func testKeyedOnIfName(c *checker) {
	p := Pool("10.0.0.0/24")
	a := c.allocAddr(store.Key{ContainerID: "c1", IfName: "eth0"}, p)
	b := c.allocAddr(store.Key{ContainerID: "c1", IfName: "eth1"}, p)
	d := c.allocAddr(store.Key{ContainerID: "c2", IfName: "eth0"}, p)
	if a == b || b == d || a == d {
		c.t.Fatalf("addresses shared: %s %s %s", a, b, d)
	}
	c.release(store.Key{ContainerID: "c1", IfName: "eth0"})
	c.absent(store.Key{ContainerID: "c1", IfName: "eth0"})
	c.holds(store.Key{ContainerID: "c1", IfName: "eth1"}, b)
	c.holds(store.Key{ContainerID: "c2", IfName: "eth0"}, d)
}

func testDualStack(c *checker) {
	att := c.alloc(req(Key("c1"), Pool("10.1.0.0/16"), Pool("fd00:1::/64")))
	c.expect("dual-stack", fmt.Sprint(att.IPs), "[10.1.0.2/16 fd00:1::2/64]")
}

func testStaticConflict(c *checker) {
	static := []netip.Prefix{netip.MustParsePrefix("10.0.0.3/29")}
	c.alloc(store.AllocRequest{Attachment: store.Attachment{Key: Key("a")}, Static: static})
	err := c.refuse(store.AllocRequest{Attachment: store.Attachment{Key: Key("b")}, Static: static}, codes.AddressInUse)
	var inUse *store.InUseError
	if !errors.As(err, &inUse) || inUse.Owner != Key("a") {
		c.t.Fatalf("error %v does not name the owner a/eth0", err)
	}
	c.holds(Key("a"), "10.0.0.3")
	// The dynamic side never hands out the static address.
	p := Pool("10.0.0.0/29")
	got := ""
	for i := 0; i < 4; i++ {
		got += c.allocAddr(Key(fmt.Sprint("d", i)), p) + " "
	}
	c.expect("dynamic around a static address", got, "10.0.0.2 10.0.0.4 10.0.0.5 10.0.0.6 ")
	c.refuse(req(Key("d9"), p), codes.PoolExhausted)
}

func testRequested(c *checker) {
	p := Pool("10.0.0.0/29")
	c.expect("requested", c.allocAddr(Key("a"), requested(p, "10.0.0.4")), "10.0.0.4")
	c.refuse(req(Key("b"), requested(p, "10.0.0.4")), codes.AddressInUse)
	c.expect("dynamic after", c.allocAddr(Key("c"), p), "10.0.0.2")
	c.expect("dynamic skips the requested one", c.allocAddr(Key("d"), p), "10.0.0.3")
	c.expect("dynamic skips the requested one", c.allocAddr(Key("e"), p), "10.0.0.5")
}

func testRequestedOutOfRange(c *checker) {
	p := Pool("10.0.0.0/29")
	c.refuse(req(Key("a"), requested(p, "10.0.0.9")), codes.AddressOutOfRange)
	c.refuse(req(Key("a"), requested(p, "10.0.0.1")), codes.AddressOutOfRange) // gateway
	c.refuse(req(Key("a"), requested(p, "fd00::1")), codes.AddressOutOfRange)
	c.expect("pool untouched", c.allocAddr(Key("b"), p), "10.0.0.2")
}

func testExhaustion(c *checker) {
	p := Pool("10.0.0.0/29")
	for i := 0; i < 5; i++ {
		c.alloc(req(Key(fmt.Sprint("c", i)), p))
	}
	err := c.refuse(req(Key("c5"), p), codes.PoolExhausted)
	c.expect("message", err.Error(), "pool 10.0.0.0/29: 5 of 5 addresses in use")
	c.release(Key("c2"))
	c.expect("after a release", c.allocAddr(Key("c5"), p), "10.0.0.4")
	c.refuse(req(Key("c6"), p), codes.PoolExhausted)
}

func testAtomicMultiPool(c *checker) {
	small := Pool("10.9.0.0/30") // one usable address: .2
	c.alloc(req(Key("full"), small))
	// The v6 pool succeeds first, then the v4 pool is exhausted: nothing may remain.
	c.refuse(req(Key("x"), Pool("fd00::/120"), small), codes.PoolExhausted)
	c.expect("v6 pool untouched", c.allocAddr(Key("y"), Pool("fd00::/120")), "fd00::2")
	// A static conflict after a successful pool: same.
	static := store.AllocRequest{Attachment: store.Attachment{Key: Key("z")}, Pools: []store.Pool{Pool("fd00::/120")},
		Static: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/30")}}
	c.refuse(static, codes.AddressInUse)
	c.expect("v6 pool untouched", c.allocAddr(Key("w"), Pool("fd00::/120")), "fd00::3")
}

func testRoundRobin(c *checker) {
	p := Pool("10.0.0.0/29") // .2 .. .6
	c.expect("a", c.allocAddr(Key("a"), p), "10.0.0.2")
	c.expect("b", c.allocAddr(Key("b"), p), "10.0.0.3")
	c.release(Key("a"))
	c.expect("just-released .2 not reused while others are free", c.allocAddr(Key("c"), p), "10.0.0.4")
	c.expect("d", c.allocAddr(Key("d"), p), "10.0.0.5")
	c.expect("e", c.allocAddr(Key("e"), p), "10.0.0.6")
	c.expect("only .2 left", c.allocAddr(Key("f"), p), "10.0.0.2")
	// Released in the order .5, .3, .6: handed out in that order.
	c.release(Key("d"))
	c.release(Key("b"))
	c.release(Key("e"))
	c.expect("oldest release first", c.allocAddr(Key("g"), p), "10.0.0.5")
	c.expect("then", c.allocAddr(Key("h"), p), "10.0.0.3")
	c.release(Key("g")) // .5 released now: .6 (released earlier) comes first
	c.expect("then", c.allocAddr(Key("i"), p), "10.0.0.6")
	c.expect("last released last", c.allocAddr(Key("j"), p), "10.0.0.5")
	c.refuse(req(Key("k"), p), codes.PoolExhausted)
}

func testStaticFromQueue(c *checker) {
	p := Pool("10.0.0.0/30") // one usable address: .2
	c.alloc(req(Key("a"), p))
	c.release(Key("a")) // .2 queued
	c.alloc(store.AllocRequest{Attachment: store.Attachment{Key: Key("s")},
		Static: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/30")}})
	c.refuse(req(Key("b"), p), codes.PoolExhausted)
	c.release(Key("s"))
	c.expect("queued again after the static release", c.allocAddr(Key("b"), p), "10.0.0.2")
}

func testRangesChange(c *checker) {
	whole := Pool("10.0.0.0/29")
	c.alloc(req(Key("a"), whole)) // .2
	c.alloc(req(Key("b"), whole)) // .3
	narrow := whole
	narrow.Ranges = []store.Range{whole.Ranges[0]}
	narrow.Ranges[0].Last = netip.MustParseAddr("10.0.0.4")
	c.expect("new ranges skip what is held", c.allocAddr(Key("c"), narrow), "10.0.0.4")
	c.refuse(req(Key("d"), narrow), codes.PoolExhausted)
	c.release(Key("a"))
	c.expect("release reaches the new pool's queue", c.allocAddr(Key("d"), narrow), "10.0.0.2")
	c.expect("old pool goes on", c.allocAddr(Key("e"), whole), "10.0.0.5")
}

func testReleaseRepeatable(c *checker) {
	c.alloc(req(Key("a"), Pool("10.0.0.0/24"), Pool("fd00::/64")))
	c.expect("released", addrs(c.release(Key("a"))), "10.0.0.2,fd00::2")
	if ips := c.release(Key("a")); ips != nil {
		c.t.Fatalf("second release returned %v", ips)
	}
	if ips := c.release(Key("never")); ips != nil {
		c.t.Fatalf("unknown release returned %v", ips)
	}
	c.absent(Key("a"))
}

func testDestroy(c *checker) {
	if err := c.st.Destroy(c.ctx, store.DestroyOptions{}); err != nil {
		c.t.Fatalf("Destroy of a store never written: %v", err)
	}
	p := Pool("10.0.0.0/24")
	c.expect("first", c.allocAddr(Key("a"), p), "10.0.0.2")
	c.expect("second", c.allocAddr(Key("b"), p, Pool("fd00::/64")), "10.0.0.3,fd00::2")
	c.release(Key("a")) // 10.0.0.2 now waits behind every never-used address
	// IfUnused: b still holds addresses, so nothing changes.
	if err := c.st.Destroy(c.ctx, store.DestroyOptions{IfUnused: true}); err != nil {
		c.t.Fatalf("Destroy IfUnused: %v", err)
	}
	c.expect("kept while used", c.allocAddr(Key("b"), p), "10.0.0.3,fd00::2")
	for range 2 {
		if err := c.st.Destroy(c.ctx, store.DestroyOptions{}); err != nil {
			c.t.Fatalf("Destroy: %v", err)
		}
	}
	list, err := c.st.List(c.ctx)
	if err != nil || len(list) != 0 {
		c.t.Fatalf("List after Destroy = %v, %v; want nothing", list, err)
	}
	c.absent(Key("b"))
	// Afresh: round robin starts over, and b's old addresses are free.
	c.expect("after destroy", c.allocAddr(Key("c"), p, Pool("fd00::/64")), "10.0.0.2,fd00::2")
	c.expect("next", c.allocAddr(Key("b"), p), "10.0.0.3")
	// IfUnused on a store whose attachments are all released: destroyed.
	c.release(Key("b"))
	c.release(Key("c"))
	if err := c.st.Destroy(c.ctx, store.DestroyOptions{IfUnused: true}); err != nil {
		c.t.Fatalf("Destroy IfUnused of an unused store: %v", err)
	}
	c.expect("afresh again", c.allocAddr(Key("d"), p), "10.0.0.2")
}

func testGC(c *checker) {
	p := Pool("10.0.0.0/24")
	for _, id := range []string{"k1", "k2", "k3", "k4"} {
		c.alloc(req(Key(id), p))
	}
	c.alloc(req(store.Key{ContainerID: "k1", IfName: "eth1"}, p))
	valid := []store.Key{Key("k1"), Key("k3"), {ContainerID: "other", IfName: "eth0"}}
	gone, err := c.st.GC(c.ctx, valid)
	if err != nil {
		c.t.Fatal(err)
	}
	got := ""
	for _, a := range gone {
		got += a.Key.String() + "=" + addrs(a.IPs) + " "
	}
	c.expect("collected", got, "k1/eth1=10.0.0.6 k2/eth0=10.0.0.3 k4/eth0=10.0.0.5 ")
	list, err := c.st.List(c.ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	got = ""
	for _, a := range list {
		got += a.Key.String() + " "
	}
	c.expect("kept", got, "k1/eth0 k3/eth0 ")
	// The collected addresses are free again.
	c.expect("freed", c.allocAddr(Key("n"), requested(p, "10.0.0.3")), "10.0.0.3")
	if gone, err := c.st.GC(c.ctx, valid[:1]); err != nil || len(gone) != 2 {
		c.t.Fatalf("second GC: %v, %v", gone, err)
	}
}

func testStatus(c *checker) {
	if err := c.st.Status(c.ctx); err != nil {
		c.t.Fatalf("Status: %v", err)
	}
}

func testConcurrent(c *checker) {
	const workers, each = 8, 6
	p := Pool("10.0.0.0/24")
	var (
		mu   sync.Mutex
		seen = map[string]store.Key{}
		wg   sync.WaitGroup
		errs = make(chan error, workers*each)
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := Key(fmt.Sprintf("w%d-%d", w, i))
				att, err := c.st.Allocate(c.ctx, req(k, p))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if other, dup := seen[addrs(att.IPs)]; dup {
					errs <- fmt.Errorf("%s handed to %s and %s", addrs(att.IPs), other, k)
				}
				seen[addrs(att.IPs)] = k
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Error(err)
	}
	list, err := c.st.List(c.ctx)
	if err != nil || len(list) != workers*each {
		c.t.Fatalf("List: %d attachments, %v; want %d", len(list), err, workers*each)
	}
}

func testInvalidKey(c *checker) {
	for _, k := range []store.Key{{ContainerID: "", IfName: "eth0"}, {ContainerID: "c", IfName: ""}, {ContainerID: "a/b", IfName: "eth0"}} {
		c.refuse(req(k, Pool("10.0.0.0/24")), codes.InvalidEnvironment)
	}
}

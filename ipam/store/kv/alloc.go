package kv

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/moornet/moor/ipam/store"
)

// poolRecord is the cursor of one pool (key pool/<id>).
type poolRecord struct {
	Ranges []rangeCursor `json:"ranges"`
	// Head and Tail delimit the free queue: entries Head..Tail-1 (some may be gone
	// because a static reservation took the address).
	Head uint64 `json:"head"`
	Tail uint64 `json:"tail"`
}

// rangeCursor is the sweep state of one range: Next is the next address to try, the
// zero Addr once the sweep has passed Last.
type rangeCursor struct {
	Subnet netip.Prefix `json:"subnet"`
	First  netip.Addr   `json:"first"`
	Last   netip.Addr   `json:"last"`
	Next   netip.Addr   `json:"next"`
}

// passed reports whether the sweep has gone past a (so a freed a must be queued).
func (c rangeCursor) passed(a netip.Addr) bool {
	return !c.Next.IsValid() || a.Compare(c.Next) < 0
}

func (c rangeCursor) contains(a netip.Addr) bool {
	return store.Range{First: c.First, Last: c.Last}.Contains(a)
}

// txn wraps one backend transaction with the records it has read, so that each key is
// decoded once and written once.
type txn struct {
	name  string
	t     Txn
	ids   []string // pool index, nil until read
	pools map[string]*poolRecord
	dirty map[string]bool
}

func newTxn(name string, t Txn) *txn {
	return &txn{name: name, t: t, pools: map[string]*poolRecord{}, dirty: map[string]bool{}}
}

func (x *txn) fail(op string, err error) error {
	return &store.Error{Store: x.name, Op: op, Err: err}
}

func (x *txn) getJSON(key string, v any) (bool, error) {
	raw, ok, err := x.t.Get(key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return false, x.fail("decoding "+key, err)
	}
	return true, nil
}

func (x *txn) putJSON(key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return x.fail("encoding "+key, err)
	}
	return x.t.Put(key, string(raw))
}

func (x *txn) attachment(k store.Key) (store.Attachment, bool, error) {
	var att store.Attachment
	ok, err := x.getJSON(attKey(k), &att)
	return att, ok, err
}

// allocate reserves everything req asks for key and records the attachment.
func (x *txn) allocate(key store.Key, req store.AllocRequest) (store.Attachment, error) {
	att := req.Attachment
	att.IPs = nil
	att.Created = stamp(att.Created)
	for _, p := range req.Pools {
		ip, err := x.fromPool(key, p)
		if err != nil {
			return store.Attachment{}, err
		}
		att.IPs = append(att.IPs, ip)
	}
	for _, p := range req.Static {
		if err := x.claimOrFail(key, p.Addr()); err != nil {
			return store.Attachment{}, err
		}
		att.IPs = append(att.IPs, p)
	}
	if err := faultPoint(FaultAfterReserve); err != nil {
		return store.Attachment{}, err
	}
	if err := x.flushPools(); err != nil {
		return store.Attachment{}, err
	}
	if err := x.putJSON(attKey(key), att); err != nil {
		return store.Attachment{}, err
	}
	return att, nil
}

// claim reserves a for key if it is free; held reports it was not.
func (x *txn) claim(key store.Key, a netip.Addr) (held bool, err error) {
	if _, held, err := x.t.Get(ipKey(a)); err != nil || held {
		return held, err
	}
	if err := x.t.Put(ipKey(a), key.String()); err != nil {
		return false, err
	}
	return false, x.unqueue(a)
}

// claimOrFail reserves a for key or reports who holds it.
func (x *txn) claimOrFail(key store.Key, a netip.Addr) error {
	held, err := x.claim(key, a)
	if err != nil || !held {
		return err
	}
	owner, _, err := x.t.Get(ipKey(a))
	if err != nil {
		return err
	}
	k, _ := store.ParseKey(owner)
	return &store.InUseError{Addr: a, Owner: k}
}

// fromPool reserves the requested address of p, or the next free one.
func (x *txn) fromPool(key store.Key, p store.Pool) (netip.Prefix, error) {
	if len(p.Ranges) == 0 {
		return netip.Prefix{}, x.fail("allocating", fmt.Errorf("pool without ranges"))
	}
	id := p.ID()
	rec, err := x.pool(id, p)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Requested; a.IsValid() {
		r, ok := rangeOf(p, a)
		if !ok {
			return netip.Prefix{}, &store.OutOfRangeError{Addr: a, Pool: p.String()}
		}
		if r.Skips(a) {
			return netip.Prefix{}, &store.OutOfRangeError{Addr: a, Pool: p.String(),
				Reason: "is the gateway, network or broadcast address of " + r.Subnet.String() + " and never handed out"}
		}
		if err := x.claimOrFail(key, a); err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, r.Subnet.Bits()), nil
	}
	if got, ok, err := x.sweep(key, id, rec, p); err != nil || ok {
		return got, err
	}
	if got, ok, err := x.popQueue(key, id, rec, p); err != nil || ok {
		return got, err
	}
	size := p.Size()
	return netip.Prefix{}, &store.ExhaustedError{Pool: p.String(), InUse: size, Size: size}
}

// sweep advances the pool's cursors to the first free address not yet handed out.
func (x *txn) sweep(key store.Key, id string, rec *poolRecord, p store.Pool) (netip.Prefix, bool, error) {
	for i := range rec.Ranges {
		c, r := &rec.Ranges[i], p.Ranges[i]
		for c.Next.IsValid() {
			a := c.Next
			if a == c.Last {
				c.Next = netip.Addr{}
			} else {
				c.Next = a.Next()
			}
			x.dirty[id] = true
			if got, ok, err := x.offer(key, a, r); err != nil || ok {
				return got, ok, err
			}
		}
	}
	return netip.Prefix{}, false, nil
}

// popQueue takes free addresses from the head of the pool's queue until one can be
// handed out.
func (x *txn) popQueue(key store.Key, id string, rec *poolRecord, p store.Pool) (netip.Prefix, bool, error) {
	for rec.Head < rec.Tail {
		qk := queueKey(id, rec.Head)
		rec.Head++
		x.dirty[id] = true
		v, ok, err := x.t.Get(qk)
		if err != nil || !ok { // !ok: taken by a static reservation meanwhile
			if err != nil {
				return netip.Prefix{}, false, err
			}
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return netip.Prefix{}, false, x.fail("decoding "+qk, err)
		}
		if err := x.dropQueued(id, qk, a); err != nil {
			return netip.Prefix{}, false, err
		}
		if r, inRange := rangeOf(p, a); inRange {
			if got, ok, err := x.offer(key, a, r); err != nil || ok {
				return got, ok, err
			}
		}
	}
	return netip.Prefix{}, false, nil
}

// offer claims a (of range r) for key unless r never hands it out or it is held.
func (x *txn) offer(key store.Key, a netip.Addr, r store.Range) (netip.Prefix, bool, error) {
	if r.Skips(a) {
		return netip.Prefix{}, false, nil
	}
	if held, err := x.claim(key, a); err != nil || held {
		return netip.Prefix{}, false, err
	}
	return netip.PrefixFrom(a, r.Subnet.Bits()), true, nil
}

func rangeOf(p store.Pool, a netip.Addr) (store.Range, bool) {
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return r, true
		}
	}
	return store.Range{}, false
}

// poolIDs returns the pool index.
func (x *txn) poolIDs() ([]string, error) {
	if x.ids != nil {
		return x.ids, nil
	}
	x.ids = []string{}
	_, err := x.getJSON(poolsKey, &x.ids)
	return x.ids, err
}

// pool returns the cursor of pool id, creating it (and indexing it) for p if absent.
func (x *txn) pool(id string, p store.Pool) (*poolRecord, error) {
	rec, err := x.loadPool(id)
	if err != nil || rec != nil {
		if rec != nil && len(rec.Ranges) != len(p.Ranges) {
			return nil, x.fail("reading pool "+id, fmt.Errorf("%d ranges recorded, %d configured", len(rec.Ranges), len(p.Ranges)))
		}
		return rec, err
	}
	rec = &poolRecord{}
	for _, r := range p.Ranges {
		rec.Ranges = append(rec.Ranges, rangeCursor{Subnet: r.Subnet, First: r.First, Last: r.Last, Next: r.First})
	}
	ids, err := x.poolIDs()
	if err != nil {
		return nil, err
	}
	x.ids = append(ids, id)
	if err := x.putJSON(poolsKey, x.ids); err != nil {
		return nil, err
	}
	x.pools[id] = rec
	x.dirty[id] = true
	return rec, nil
}

// loadPool returns the cursor of pool id, or nil when there is none.
func (x *txn) loadPool(id string) (*poolRecord, error) {
	if rec, ok := x.pools[id]; ok {
		return rec, nil
	}
	rec := &poolRecord{}
	ok, err := x.getJSON(poolKey(id), rec)
	if err != nil || !ok {
		return nil, err
	}
	x.pools[id] = rec
	return rec, nil
}

func (x *txn) flushPools() error {
	for id := range x.dirty {
		if err := x.putJSON(poolKey(id), x.pools[id]); err != nil {
			return err
		}
	}
	clear(x.dirty)
	return nil
}

// unqueue removes a from the free queue of every pool that holds it.
func (x *txn) unqueue(a netip.Addr) error {
	ids, err := x.poolIDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		seq, ok, err := x.t.Get(queuedKey(id, a))
		if err != nil || !ok {
			if err != nil {
				return err
			}
			continue
		}
		n, err := strconv.ParseUint(seq, 16, 64)
		if err != nil {
			return x.fail("decoding "+queuedKey(id, a), err)
		}
		if err := x.dropQueued(id, queueKey(id, n), a); err != nil {
			return err
		}
	}
	return nil
}

func (x *txn) dropQueued(id, qk string, a netip.Addr) error {
	if err := x.t.Delete(qk); err != nil {
		return err
	}
	return x.t.Delete(queuedKey(id, a))
}

// release frees key's addresses and queues them in every pool whose sweep passed them.
func (x *txn) release(key store.Key) ([]netip.Prefix, error) {
	att, ok, err := x.attachment(key)
	if err != nil || !ok {
		return nil, err
	}
	ids, err := x.poolIDs()
	if err != nil {
		return nil, err
	}
	for _, p := range att.IPs {
		a := p.Addr()
		owner, held, err := x.t.Get(ipKey(a))
		if err != nil {
			return nil, err
		}
		if !held || owner != key.String() {
			continue // not ours: leave it (and its queue state) alone
		}
		if err := x.t.Delete(ipKey(a)); err != nil {
			return nil, err
		}
		for _, id := range ids {
			if err := x.enqueue(id, a); err != nil {
				return nil, err
			}
		}
	}
	if err := x.flushPools(); err != nil {
		return nil, err
	}
	return att.IPs, x.t.Delete(attKey(key))
}

// enqueue appends a to pool id's free queue if the pool's sweep has passed it.
func (x *txn) enqueue(id string, a netip.Addr) error {
	rec, err := x.loadPool(id)
	if err != nil || rec == nil {
		return err
	}
	passed := false
	for _, c := range rec.Ranges {
		if c.contains(a) && c.passed(a) {
			passed = true
		}
	}
	if !passed {
		return nil
	}
	if _, queued, err := x.t.Get(queuedKey(id, a)); err != nil || queued {
		return err
	}
	seq := rec.Tail
	rec.Tail++
	x.dirty[id] = true
	if err := x.t.Put(queueKey(id, seq), a.String()); err != nil {
		return err
	}
	return x.t.Put(queuedKey(id, a), fmt.Sprintf(seqFormat, seq))
}

package server

import (
	"cmp"
	"hash/maphash"
	"maps"
	"math/bits"
	"slices"
)

// shardMap is a string-keyed map cut into shards by a hash of the key, so that a copy
// with a few keys changed (an incremental ADD or DEL, see withRecord) copies the shards
// those keys fall in and shares the others: the cost of a change follows the size of a
// shard, not of the network. Lookups pay one hash of the key more than a plain map.
// A view's maps are never written once published; edits work on a copy (edit).
type shardMap[V comparable] struct {
	shards []map[string]V // len is a power of two
	n      int            // keys held
}

// Shard sizing: about shardKeys keys per shard when built; an edit that brings the
// average past twice that doubles the shards (or more), so that a network grown by
// incremental ADDs alone keeps small shards. At most maxShards: a network's names are
// bounded (records.MaxNamesPerNetwork), so a shard stays small anyway.
const (
	shardKeys = 128
	maxShards = 1024
)

// shardSeed seeds the shard hash of this process's maps.
var shardSeed = maphash.MakeSeed()

// shardsFor returns the number of shards for n keys.
func shardsFor(n int) int {
	s := (n + shardKeys - 1) / shardKeys
	if s <= 1 {
		return 1
	}
	return min(1<<bits.Len(uint(s-1)), maxShards)
}

// newShardMap returns an empty map sized for n keys.
func newShardMap[V comparable](n int) shardMap[V] {
	s := shardsFor(n)
	m := shardMap[V]{shards: make([]map[string]V, s)}
	for i := range m.shards {
		m.shards[i] = make(map[string]V, n/s)
	}
	return m
}

func (m *shardMap[V]) index(key string) int {
	if len(m.shards) == 1 {
		return 0
	}
	return int(maphash.String(shardSeed, key) & uint64(len(m.shards)-1))
}

// get returns the value of key.
func (m *shardMap[V]) get(key string) (V, bool) {
	if len(m.shards) == 0 {
		var zero V
		return zero, false
	}
	v, ok := m.shards[m.index(key)][key]
	return v, ok
}

// getBytes returns the value of the key whose bytes are b, without allocating.
func (m *shardMap[V]) getBytes(b []byte) V {
	if len(m.shards) == 0 {
		var zero V
		return zero
	}
	i := 0
	if len(m.shards) > 1 {
		i = int(maphash.Bytes(shardSeed, b) & uint64(len(m.shards)-1))
	}
	return m.shards[i][string(b)]
}

// set writes key in a map being built (never one a published view holds).
func (m *shardMap[V]) set(key string, v V) {
	s := m.shards[m.index(key)]
	if _, ok := s[key]; !ok {
		m.n++
	}
	s[key] = v
}

// len returns the number of keys.
func (m *shardMap[V]) len() int { return m.n }

// all calls fn for every key and value.
func (m *shardMap[V]) all(fn func(string, V)) {
	for _, s := range m.shards {
		for k, v := range s {
			fn(k, v)
		}
	}
}

// edit returns a copy of m to change with set and del: it shares m's shards until it
// writes to one, which it copies then. done finishes it.
func (m *shardMap[V]) edit() *shardEdit[V] {
	e := &shardEdit[V]{m: shardMap[V]{shards: slices.Clone(m.shards), n: m.n}}
	if len(e.m.shards) == 0 {
		e.m.shards = []map[string]V{{}}
		e.owned = []int{0}
	}
	return e
}

// shardEdit is a copy of a shardMap being changed.
type shardEdit[V comparable] struct {
	m     shardMap[V]
	owned []int // shards copied already: few, an edit changes a record's keys
}

func (e *shardEdit[V]) shard(key string) map[string]V {
	i := e.m.index(key)
	if !slices.Contains(e.owned, i) {
		e.m.shards[i] = maps.Clone(e.m.shards[i])
		if e.m.shards[i] == nil {
			e.m.shards[i] = map[string]V{}
		}
		e.owned = append(e.owned, i)
	}
	return e.m.shards[i]
}

// get returns the value of key in the copy.
func (e *shardEdit[V]) get(key string) (V, bool) { return e.m.get(key) }

// set writes key in the copy.
func (e *shardEdit[V]) set(key string, v V) {
	s := e.shard(key)
	if _, ok := s[key]; !ok {
		e.m.n++
	}
	s[key] = v
}

// del removes key from the copy.
func (e *shardEdit[V]) del(key string) {
	if _, ok := e.m.get(key); !ok {
		return
	}
	delete(e.shard(key), key)
	e.m.n--
}

// done returns the changed copy, with more shards when it outgrew them.
func (e *shardEdit[V]) done() shardMap[V] {
	if e.m.n <= 2*shardKeys*len(e.m.shards) || len(e.m.shards) >= maxShards {
		return e.m
	}
	out := newShardMap[V](e.m.n)
	e.m.all(out.set)
	return out
}

// recIndex holds a view's recordNames in shards by key (the key is a hash already), each
// sorted by key, so that adding or removing one copies a shard and not the whole list.
type recIndex struct {
	shards [][]recordNames // len is a power of two; shard i holds the keys k with k&(len-1) == i
	n      int
}

// newRecIndex indexes all, which it sorts in place and carves the shards from.
func newRecIndex(all []recordNames) recIndex {
	s := shardsFor(len(all))
	mask := uint64(s - 1)
	slices.SortFunc(all, func(a, b recordNames) int {
		return cmp.Or(cmp.Compare(a.key&mask, b.key&mask), cmp.Compare(a.key, b.key))
	})
	x := recIndex{shards: make([][]recordNames, s), n: len(all)}
	start := 0
	for i := range x.shards {
		end := start
		for end < len(all) && all[end].key&mask == uint64(i) {
			end++
		}
		x.shards[i] = all[start:end:end] // no room to grow: an insert copies
		start = end
	}
	return x
}

// find returns the shard of key, where key is or would go in it, and whether it is there
// (more than once: dup).
func (x *recIndex) find(key uint64) (shard, at int, found, dup bool) {
	if len(x.shards) == 0 {
		return 0, 0, false, false
	}
	shard = int(key & uint64(len(x.shards)-1))
	s := x.shards[shard]
	at, found = slices.BinarySearchFunc(s, key, compareKey)
	return shard, at, found, found && at+1 < len(s) && s[at+1].key == key
}

// with returns a copy of x with rn inserted at shard and at (see find).
func (x *recIndex) with(shard, at int, rn recordNames) recIndex {
	if len(x.shards) == 0 {
		return newRecIndex([]recordNames{rn})
	}
	out := recIndex{shards: slices.Clone(x.shards), n: x.n + 1}
	out.shards[shard] = slices.Insert(slices.Clip(x.shards[shard]), at, rn)
	if out.n > 2*shardKeys*len(out.shards) && len(out.shards) < maxShards {
		return newRecIndex(out.all())
	}
	return out
}

// without returns a copy of x without the record at shard and at.
func (x *recIndex) without(shard, at int) recIndex {
	out := recIndex{shards: slices.Clone(x.shards), n: x.n - 1}
	out.shards[shard] = slices.Delete(slices.Clone(x.shards[shard]), at, at+1)
	return out
}

// all returns every recordNames in a new slice, in shard order.
func (x *recIndex) all() []recordNames {
	out := make([]recordNames, 0, x.n)
	for _, s := range x.shards {
		out = append(out, s...)
	}
	return out
}

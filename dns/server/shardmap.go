package server

import (
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

package server

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// Random edits of a shardMap, from empty to past a few reshardings and back: every copy
// holds what a plain map given the same writes holds, finds every key in its shard, and
// the map it was copied from stays as it was (a published view is read while the next is
// made).
func TestShardMapEdits(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var cur shardMap[int]
	want := map[string]int{}
	check := func(m *shardMap[int], want map[string]int, when string) {
		t.Helper()
		got := plainMap(m)
		if !maps.Equal(got, want) || m.len() != len(want) {
			t.Fatalf("%s: %d keys (counted %d), want %d", when, len(got), m.len(), len(want))
		}
		for k, v := range want {
			if g, ok := m.get(k); !ok || g != v {
				t.Fatalf("%s: get(%s) = %d, %v; want %d", when, k, g, ok, v)
			}
			if g := m.getBytes([]byte(k)); g != v {
				t.Fatalf("%s: getBytes(%s) = %d, want %d", when, k, g, v)
			}
		}
	}
	grew := 0
	for step := range 3000 {
		prev, prevWant := cur, maps.Clone(want)
		e := cur.edit()
		for range 1 + rnd.IntN(8) {
			k := fmt.Sprintf("k%d.", rnd.IntN(6000))
			if step > 2000 && rnd.IntN(4) > 0 || rnd.IntN(5) == 0 { // shrink at the end
				e.del(k)
				delete(want, k)
			} else {
				v := rnd.Int()
				e.set(k, v)
				want[k] = v
			}
		}
		cur = e.done()
		if len(cur.shards) > len(prev.shards) {
			grew++
		}
		if step%50 == 0 || len(cur.shards) != len(prev.shards) {
			check(&prev, prevWant, fmt.Sprintf("step %d, the map copied from", step))
			check(&cur, want, fmt.Sprintf("step %d", step))
		}
	}
	check(&cur, want, "end")
	if grew < 3 {
		t.Fatalf("the shards grew %d times: the sequence does not test resharding", grew)
	}
}

func TestShardsFor(t *testing.T) {
	for _, c := range []struct{ n, want int }{{0, 1}, {1, 1}, {shardKeys, 1}, {shardKeys + 1, 2}, {3 * shardKeys, 4}, {1 << 30, maxShards}} {
		if got := shardsFor(c.n); got != c.want {
			t.Errorf("shardsFor(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

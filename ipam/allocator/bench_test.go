package allocator_test

import (
	"fmt"
	"testing"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/store"

	"github.com/moornet/moor/ipam/store/memory"
)

// benchFills are the numbers of addresses already allocated in the /16 when the
// measured ADDs run.
var benchFills = []int{10, 1000, 10000}

// releaseBatch: the measured ADDs are released, untimed, every releaseBatch ADDs, so
// that the fill stays within releaseBatch of its nominal value and the cost of stopping
// the timer is spread over many ADDs.
const releaseBatch = 256

// BenchmarkAllocateMemory measures one ADD (Allocate) on the in-memory store with
// 10, 1000 and 10000 addresses of a /16 in use.
func BenchmarkAllocateMemory(b *testing.B) {
	benchAllocate(b, func(b *testing.B) *allocator.Allocator {
		return allocator.New(parse(b, `{"subnet":"10.100.0.0/16"}`), memory.New())
	})
}

// BenchmarkAllocateLocal is the same on the local bbolt store (file in a temporary
// directory, fsync on every commit, open and lock per operation).
func BenchmarkAllocateLocal(b *testing.B) {
	benchAllocate(b, func(b *testing.B) *allocator.Allocator {
		a, _ := onLocal(b, parse(b, `{"dataDir":"%s","subnet":"10.100.0.0/16"}`))
		return a
	})
}

func benchAllocate(b *testing.B, newAllocator func(b *testing.B) *allocator.Allocator) {
	for _, fill := range benchFills {
		b.Run(fmt.Sprintf("fill=%d", fill), func(b *testing.B) {
			a := newAllocator(b)
			for i := 0; i < fill; i++ {
				add(b, a, allocator.Request{Key: key(fmt.Sprint("fill", i))})
			}
			var held []store.Key
			i := 0
			for b.Loop() {
				k := key(fmt.Sprint("bench", i))
				i++
				add(b, a, allocator.Request{Key: k})
				if held = append(held, k); len(held) == releaseBatch {
					b.StopTimer()
					for _, k := range held {
						if _, err := a.Release(ctx, k); err != nil {
							b.Fatal(err)
						}
					}
					held = held[:0]
					b.StartTimer()
				}
			}
		})
	}
}

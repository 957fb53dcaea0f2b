package memory_test

import (
	"testing"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/memory"
	"github.com/moornet/moor/ipam/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
}

package allocator

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/local"
)

// dbSuffix names a network's bbolt file: <dataDir>/<network>.db.
const dbSuffix = ".db"

// StorePath returns the local store file of cfg's network.
func StorePath(cfg *config.Config) string { return filepath.Join(cfg.DataDir, cfg.Name+dbSuffix) }

// StorePrefix returns the etcd key prefix of cfg's network: <store.prefix>/<network>/.
func StorePrefix(cfg *config.Config) string {
	return strings.TrimSuffix(cfg.Store.Prefix, "/") + "/" + cfg.Name + "/"
}

// StoreOpener opens the store of one type for cfg's network.
type StoreOpener func(cfg *config.Config) (store.Store, error)

// openers holds the store types besides local that are linked into this binary. The
// etcd store registers itself from package etcdstore: its client (gRPC, protobuf) costs
// milliseconds of package initialisation on every exec, which the drivers on the ADD hot
// path (moor-bridge, moor-macvlan) do not pay unless they link it.
var openers = map[string]StoreOpener{}

// RegisterStore makes a store type available to OpenStore. Call it from an init function.
func RegisterStore(typ string, open StoreOpener) { openers[typ] = open }

// StoreLinked reports whether OpenStore can open stores of type typ in this binary.
func StoreLinked(typ string) bool {
	if typ == "" || typ == config.StoreLocal {
		return true
	}
	_, ok := openers[typ]
	return ok
}

// ErrStoreNotLinked is returned by OpenStore for a store type this binary lacks (etcd, in
// the binaries that stay free of the etcd client); plugins/ipamclient then execs
// moor-ipam-etcd, which links it.
var ErrStoreNotLinked = errors.New("store type not linked into this binary")

// OpenStore opens the store cfg names: the local bbolt file of the network (default)
// or a registered type (etcd: the network's prefix). Neither does I/O yet: an unusable
// store shows up in the first operation or in Status.
func OpenStore(cfg *config.Config) (store.Store, error) {
	typ := cfg.Store.Type
	if typ != "" && typ != config.StoreLocal {
		open, ok := openers[typ]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrStoreNotLinked, typ)
		}
		return open(cfg)
	}
	st, err := local.Open(local.Options{Path: StorePath(cfg), LockTimeout: cfg.Store.LockTimeout})
	if err != nil {
		return nil, err
	}
	return st, nil
}

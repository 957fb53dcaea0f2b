// Package etcdstore links the etcd store into a binary's IPAM: importing it (for its
// side effect) registers the "etcd" store type with package allocator. moor-ipam,
// moor-overlay and the moor CLI import it; the drivers on the ADD hot path do not, and
// exec moor-ipam for an etcd-backed network instead (see plugins/ipamclient).
package etcdstore

import (
	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/etcdkv"
)

func init() { allocator.RegisterStore(config.StoreEtcd, open) }

// open opens the network's prefix in etcd. Its errors carry their codes (etcdclient:
// TLS files that cannot be loaded are code 7 naming ipam.store.tls).
func open(cfg *config.Config) (store.Store, error) {
	st, err := etcdkv.Open(etcdkv.Options{Etcd: cfg.Store.Etcd, Prefix: allocator.StorePrefix(cfg)})
	if err != nil {
		return nil, err
	}
	return st, nil
}

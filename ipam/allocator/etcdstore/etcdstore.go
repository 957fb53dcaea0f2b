// Package etcdstore links the etcd store into a binary's IPAM: importing it (for its
// side effect) registers the "etcd" store type with package allocator. moor-ipam,
// moor-overlay and the moor CLI import it; the drivers on the ADD hot path do not, and
// exec moor-ipam for an etcd-backed network instead (see plugins/ipamclient).
package etcdstore

import (
	"errors"

	"github.com/moornet/moor/ipam/allocator"
	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/etcd"
	"github.com/moornet/moor/plugins/codes"
)

func init() { allocator.RegisterStore(config.StoreEtcd, open) }

// open opens the network's prefix in etcd; bad TLS files are a config error naming
// ipam.store.tls.
func open(cfg *config.Config) (store.Store, error) {
	st, err := etcd.Open(etcd.Options{
		Endpoints:      cfg.Store.Endpoints,
		Prefix:         allocator.StorePrefix(cfg),
		CertFile:       cfg.Store.TLS.CertFile,
		KeyFile:        cfg.Store.TLS.KeyFile,
		CAFile:         cfg.Store.TLS.CAFile,
		DialTimeout:    cfg.Store.DialTimeout,
		RequestTimeout: cfg.Store.RequestTimeout,
	})
	var tlsErr *etcd.TLSError
	if errors.As(err, &tlsErr) {
		return nil, &config.Error{Field: "ipam.store.tls", Reason: tlsErr.Err.Error(), Code: codes.InvalidNetworkConfig}
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

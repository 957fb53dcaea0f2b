package allocator

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/moornet/moor/ipam/config"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/ipam/store/etcd"
	"github.com/moornet/moor/ipam/store/local"
	"github.com/moornet/moor/plugins/codes"
)

// dbSuffix names a network's bbolt file: <dataDir>/<network>.db.
const dbSuffix = ".db"

// StorePath returns the local store file of cfg's network.
func StorePath(cfg *config.Config) string { return filepath.Join(cfg.DataDir, cfg.Name+dbSuffix) }

// StorePrefix returns the etcd key prefix of cfg's network: <store.prefix>/<network>/.
func StorePrefix(cfg *config.Config) string {
	return strings.TrimSuffix(cfg.Store.Prefix, "/") + "/" + cfg.Name + "/"
}

// OpenStore opens the store cfg names: the local bbolt file of the network (default)
// or the network's prefix in etcd. Neither does I/O yet: an unusable store shows up in
// the first operation or in Status.
func OpenStore(cfg *config.Config) (store.Store, error) {
	switch cfg.Store.Type {
	case config.StoreEtcd:
		st, err := etcd.Open(etcd.Options{
			Endpoints:      cfg.Store.Endpoints,
			Prefix:         StorePrefix(cfg),
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
	default:
		st, err := local.Open(local.Options{Path: StorePath(cfg), LockTimeout: cfg.Store.LockTimeout})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
}

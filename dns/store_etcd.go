//go:build !moor_noetcd

package main

import (
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/records/etcdrecords"
	"github.com/moornet/moor/plugins/etcdclient"
)

// This file is the etcd record store, linked into moor-dns-etcd (the default build of
// this package) and left out of moor-dns (built with the tag moor_noetcd; see delegate.go).

// etcdLinked says this binary opens etcd stores itself.
const etcdLinked = true

const etcdDefaultPrefix = etcdrecords.DefaultPrefix

// openEtcd connects to the store's etcd.
func (s storeConf) openEtcd() (records.Store, error) {
	// The sidecar drops privileges after its start: the key pair is read once, here.
	cfg := s.etcd
	cfg.PinKeyPair = true
	cli, err := etcdclient.New(cfg)
	if err != nil {
		return nil, err
	}
	st, err := etcdrecords.New(etcdrecords.Options{Client: cli, Prefix: s.Prefix, Host: s.Host, Timeout: s.etcd.RequestTimeout})
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &clientStore{Store: st, cli: cli}, nil
}

// clientStore closes its etcd client with the store.
type clientStore struct {
	*etcdrecords.Store
	cli *clientv3.Client
}

func (c *clientStore) Close() error {
	err := c.Store.Close()
	_ = c.cli.Close()
	return err
}

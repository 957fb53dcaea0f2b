//go:build moor_noetcd

package main

import (
	"errors"

	"github.com/moornet/moor/dns/records"
)

// This file stands in for store_etcd.go in moor-dns (built with the tag moor_noetcd): the
// etcd client and gRPC cost about 10 MiB of binary, 6 MiB of peak RSS and milliseconds of
// package initialisation on every exec, and only overlay networks use an etcd store. A
// call or a sidecar with an etcd store is handed to moor-dns-etcd before it gets here
// (delegate.go).

const etcdLinked = false

// etcdDefaultPrefix is never used here: an etcd config is delegated before it is checked.
const etcdDefaultPrefix = ""

var errEtcdNotLinked = errors.New("the etcd record store is not linked into this binary (moor-dns-etcd has it)")

func (s storeConf) openEtcd() (records.Store, error) { return nil, errEtcdNotLinked }

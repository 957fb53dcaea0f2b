// Package etcd is the records.Store of overlay networks: DNS records in etcd, so that a
// name registered on one host resolves on every host.
//
// Layout, under Options.Prefix (default /moor/dns):
//
//	networks/<host>/<network>                     the network as this host serves it (JSON)
//	records/<network>/<host>/<containerID>/<ifName>  one attachment's names and addresses (JSON)
//
// Design decisions, and why:
//   - Network definitions are per host. An overlay network has one gateway and one subnet
//     per host, and each host's DNS sidecar must listen on its own gateway and admit its
//     own containers: Networks returns this host's definitions only. Records are shared:
//     List returns every host's records of the network, so the sidecar on any host answers
//     for containers on every host.
//   - Records are owned by the host that wrote them (the host is part of the key): Delete,
//     and DeleteNetwork's removal of records, touch only this host's records. So GC on one
//     host, which deletes what it does not know, never removes another host's containers.
//   - Put needs this host's network definition (otherwise *records.NotFoundError), checked
//     in the same transaction as the write.
//   - Values are validated as the Local backend does (records.ValidName for names and the
//     domain, records.ValidNetworkName, records.NormalizeUpstream, records.Prefix) and
//     normalised the same way: names lowercased and de-duplicated, addresses unmapped and
//     de-duplicated.
//   - Watch follows etcd's watch from the revision current at the call; a lost watch
//     (compaction, no leader, restart) delivers Change{All: true} and resumes from the
//     newest revision, so the reader re-reads everything.
//   - An unreachable etcd is *UnavailableError (CNI code 11) after Options.Timeout.
//
// What it does not do: run etcd, or expire records of hosts that vanished without a DEL
// (their overlay leases do; the records stay until that host's GC or DeleteNetwork).
package etcdrecords

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdclient"
)

// Defaults.
const (
	DefaultPrefix  = "/moor/dns"
	DefaultTimeout = 5 * time.Second

	networksDir = "networks/"
	recordsDir  = "records/"
)

// Options configure a Store.
type Options struct {
	// Client is the etcd client; the store does not close it.
	Client *clientv3.Client
	// Prefix of every key (DefaultPrefix when empty).
	Prefix string
	// Host identifies this host (its overlay host ID); required.
	Host string
	// Timeout bounds each operation (DefaultTimeout when zero).
	Timeout time.Duration
}

// Store is a records.Store in etcd.
type Store struct {
	cli     *clientv3.Client
	prefix  string
	host    string
	timeout time.Duration

	mu      sync.Mutex
	closed  bool
	cancels map[*watch]context.CancelFunc
	wg      sync.WaitGroup
}

var _ records.Store = (*Store)(nil)

// New returns a store over o.Client.
func New(o Options) (*Store, error) {
	if o.Client == nil {
		return nil, errors.New("dns etcd store: no client")
	}
	if err := records.ValidLabel("host", o.Host, records.MaxLabel); err != nil {
		return nil, err
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return &Store{cli: o.Client, prefix: strings.TrimSuffix(o.Prefix, "/") + "/", host: o.Host, timeout: o.Timeout,
		cancels: map[*watch]context.CancelFunc{}}, nil
}

// UnavailableError: etcd did not answer in time or has no leader (code 11).
type UnavailableError struct {
	Op  string
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("dns record store (etcd) unavailable: %s: %v", e.Op, e.Err)
}

// Unwrap exposes the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// CNICode implements codes.Coded.
func (e *UnavailableError) CNICode() uint { return codes.TryAgainLater }

func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if etcdclient.Unavailable(err) {
		return &UnavailableError{Op: op, Err: err}
	}
	return &records.IOError{Op: op, Path: "etcd", Err: err}
}

func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), s.timeout)
}

func (s *Store) networkKey(host, name string) string {
	return s.prefix + networksDir + host + "/" + name
}
func (s *Store) recordsOf(network string) string { return s.prefix + recordsDir + network + "/" }
func (s *Store) recordKey(network, host, id, ifName string) string {
	return s.recordsOf(network) + host + "/" + id + "/" + ifName
}

// PutNetwork implements records.Store: this host's definition of the network.
func (s *Store) PutNetwork(ctx context.Context, n records.Network) error {
	nf, err := encodeNetwork(n)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(nf)
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err = s.cli.Put(ctx, s.networkKey(s.host, n.Name), string(data))
	return fail("put network "+n.Name, err)
}

// DeleteNetwork implements records.Store: this host's definition and records.
func (s *Store) DeleteNetwork(ctx context.Context, name string) error {
	if err := records.ValidNetworkName(name); err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpDelete(s.networkKey(s.host, name)),
		clientv3.OpDelete(s.recordsOf(name)+s.host+"/", clientv3.WithPrefix()),
	).Commit()
	return fail("delete network "+name, err)
}

// Put implements records.Store.
func (s *Store) Put(ctx context.Context, r records.Record) error {
	rf, err := encodeRecord(r)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(rf)
	netKey := s.networkKey(s.host, r.Network)
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(netKey), ">", 0)).
		Then(clientv3.OpPut(s.recordKey(r.Network, s.host, r.ContainerID, r.IfName), string(data))).Commit()
	if err != nil {
		return fail("put record "+r.Key().String(), err)
	}
	if !txn.Succeeded {
		return &records.NotFoundError{Network: r.Network}
	}
	return nil
}

// Delete implements records.Store: this host's record of the attachment.
func (s *Store) Delete(ctx context.Context, network, containerID, ifName string) error {
	if err := records.ValidKey(network, containerID, ifName); err != nil {
		return err
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.cli.Delete(ctx, s.recordKey(network, s.host, containerID, ifName))
	return fail("delete record", err)
}

// List implements records.Store: every host's records of the network ("" for all).
func (s *Store) List(ctx context.Context, network string) ([]records.Record, error) {
	key := s.prefix + recordsDir
	if network != "" {
		if err := records.ValidNetworkName(network); err != nil {
			return nil, err
		}
		key = s.recordsOf(network)
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fail("list records", err)
	}
	var out []records.Record
	var errs []error
	for _, kv := range resp.Kvs {
		r, err := decodeRecord(kv.Value)
		if err != nil {
			errs = append(errs, &records.CorruptError{Path: string(kv.Key), Err: err})
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Networks implements records.Store: this host's definitions.
func (s *Store) Networks(ctx context.Context) ([]records.Network, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+networksDir+s.host+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, fail("list networks", err)
	}
	var out []records.Network
	var errs []error
	for _, kv := range resp.Kvs {
		n, err := decodeNetwork(kv.Value)
		if err != nil {
			errs = append(errs, &records.CorruptError{Path: string(kv.Key), Err: err})
			continue
		}
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

// Close ends every watch. It does not close the client.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, cancel := range s.cancels {
		cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

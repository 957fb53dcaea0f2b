// Package etcdclient builds moor's etcd clients: one constructor, New, for the IPAM store
// in etcd (ipam/store/etcdkv), the DNS records in etcd (dns/records/etcdrecords) and the
// overlay's leases (overlay/lease), from the etcdconf.Config each of them parses the same
// way; and one test, Unavailable, that their error classification shares.
//
// Codes, the same in every plugin: TLS files that cannot be loaded are code 7 naming
// <store>.tls and the file; a client that cannot be created is code 7 naming
// <store>.endpoints (New does not connect, so only the configuration can make it fail). An
// etcd that does not answer within the request timeout is each store's code 11 error.
//
// It is a package of its own so that only the binaries that talk to etcd link the client
// (moor-ipam-etcd, moor-dns, moor-overlay, moor): the lean ones (moor-bridge, moor-macvlan,
// moor-ipam, moor-none, moor-host) import etcdconf at most. What it does not do: retry,
// hold leases or know any key layout.
package etcdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/etcdconf"
)

// keepAliveTime is how often an idle client pings etcd, so that a long-running user (the
// DNS sidecar, the overlay agent) notices a restarted server.
const keepAliveTime = 5 * time.Second

// New returns a client for c. It does not wait for a connection: an unreachable cluster
// shows in the first request. Zero timeouts take etcdconf's defaults.
func New(c etcdconf.Config) (*clientv3.Client, error) {
	if c.DialTimeout <= 0 {
		c.DialTimeout = etcdconf.DefaultDialTimeout
	}
	cfg := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTime,
		Logger:               zap.NewNop(),
	}
	if c.Dial != nil {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(c.Dial))
	}
	if c.TLS.Any() {
		info := transport.TLSInfo{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.CAFile}
		tlsCfg, err := info.ClientConfig()
		if err == nil && c.PinKeyPair && c.TLS.CertFile != "" {
			var cert tls.Certificate
			if cert, err = tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err == nil {
				tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			}
		}
		if err != nil {
			files := strings.Trim(strings.Join([]string{c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile}, ","), ",")
			return nil, codes.Wrap(codes.InvalidNetworkConfig, fmt.Sprintf("%s %q: cannot be loaded", c.FieldName("tls"), files), err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, codes.Wrap(codes.InvalidNetworkConfig, fmt.Sprintf("%s %q: no etcd client", c.FieldName("endpoints"), strings.Join(c.Endpoints, ",")), err)
	}
	return cli, nil
}

// Unavailable reports whether err means that etcd did not answer (in time, or at all: no
// leader, connection refused): a condition to try again later (code 11), unlike an answer
// that refuses the request.
func Unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	code := status.Code(err)
	var coded interface{ Code() grpccodes.Code }
	if errors.As(err, &coded) {
		code = coded.Code()
	}
	switch code {
	case grpccodes.Unavailable, grpccodes.DeadlineExceeded, grpccodes.Canceled:
		return true
	}
	return false
}

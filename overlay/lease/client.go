package lease

import (
	"context"
	"fmt"
	"net"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// ClientOptions describe how to reach etcd.
type ClientOptions struct {
	Endpoints                 []string
	CertFile, KeyFile, CAFile string
	// DialTimeout bounds the first connection (the client does not block on it: an
	// unreachable cluster shows in the first request).
	DialTimeout time.Duration
	// Dial, when set, opens the TCP connections (for example inside another network
	// namespace; see lab). Nil: the default dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// keepAliveTime is how often an idle client pings etcd, so a restarted server is noticed.
const keepAliveTime = 5 * time.Second

// NewClient returns an etcd client. It does not wait for a connection.
func NewClient(o ClientOptions) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTime,
		Logger:               zap.NewNop(),
	}
	if o.Dial != nil {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(o.Dial))
	}
	if o.CertFile != "" || o.KeyFile != "" || o.CAFile != "" {
		info := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("overlay store TLS files: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, &StoreError{Op: "creating the etcd client", Err: err}
	}
	return cli, nil
}

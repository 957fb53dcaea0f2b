package main

import (
	"encoding/json"
	"os"
	"strings"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/etcdconf"
)

// Record store kinds of the config's "store".
const (
	storeLocal = "local"
	storeEtcd  = "etcd"

	defaultHostFile      = "/etc/machine-id"
	flagStore            = "--store"
	flagEtcdEndpoint     = "--etcd-endpoint"
	flagEtcdPrefix       = "--etcd-prefix"
	flagEtcdHost         = "--etcd-host"
	flagEtcdCert         = "--etcd-cert"
	flagEtcdKey          = "--etcd-key"
	flagEtcdCA           = "--etcd-ca"
	flagEtcdTimeoutValue = "--etcd-timeout"
)

// storeConf is the config's optional "store": where the records live. Absent or type
// "local": files under storeDir, for networks of one host. "etcd": the etcd backend
// (dns/records/etcdrecords), for overlay networks, so that a name registered on one host resolves
// on every host; host identifies this host (default: the content of hostFile,
// /etc/machine-id) and must match the overlay's hostID in labs where hosts share a machine.
//
//	"store": {"type": "etcd", "endpoints": ["http://10.0.0.1:2379"], "prefix": "/moor/dns",
//	          "host": "h1", "tls": {"certFile": "", "keyFile": "", "caFile": ""},
//	          "dialTimeout": "2s", "requestTimeout": "5s"}
//
// It is read from the config apart from conf (readStoreConf) and passed to the sidecar as
// flags (serveArgs), so `moor-dns serve` reads the same store the plugin writes.
type storeConf struct {
	Type      string   `json:"type,omitempty"`
	Endpoints []string `json:"endpoints,omitempty"`
	Prefix    string   `json:"prefix,omitempty"`
	Host      string   `json:"host,omitempty"`
	HostFile  string   `json:"hostFile,omitempty"`
	// The etcd fields, as every moor config writes them (plugins/etcdconf).
	TLS            etcdconf.TLS    `json:"tls"`
	DialTimeout    json.RawMessage `json:"dialTimeout,omitempty"`
	RequestTimeout json.RawMessage `json:"requestTimeout,omitempty"`

	etcd etcdconf.Config
}

// readStoreConf decodes and checks the config's "store"; a config without one is local.
func readStoreConf(data []byte) (storeConf, error) {
	var top struct {
		Store *storeConf `json:"store"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return storeConf{}, plugins.InvalidField("store", "", err.Error())
	}
	if top.Store == nil {
		return storeConf{Type: storeLocal}, nil
	}
	s := *top.Store
	return s, s.check()
}

func (s *storeConf) check() error {
	switch s.Type {
	case "", storeLocal:
		s.Type = storeLocal
		if len(s.Endpoints) > 0 || s.Host != "" {
			return plugins.UnsupportedField("store.endpoints", strings.Join(s.Endpoints, ","), `applies to store type "etcd" only`)
		}
		return nil
	case storeEtcd:
	default:
		return plugins.InvalidField("store.type", s.Type, `must be "local" or "etcd"`)
	}
	fields := etcdconf.Fields{Endpoints: s.Endpoints, DialTimeout: s.DialTimeout, RequestTimeout: s.RequestTimeout}
	if s.TLS.Any() {
		fields.TLS = &s.TLS
	}
	var err error
	if s.etcd, err = fields.Config("store"); err != nil {
		return err
	}
	if s.Prefix == "" {
		s.Prefix = etcdDefaultPrefix
	}
	if s.Host == "" {
		file := s.HostFile
		if file == "" {
			file = defaultHostFile
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return plugins.InvalidField("store.hostFile", file, "cannot be read and store.host is not set: "+err.Error())
		}
		s.Host = strings.TrimSpace(string(data))
	}
	return nil
}

// open returns the record store: Local at storeDir, or etcd (openEtcd, in the binary
// that links the client). Closing it closes the client.
func (s storeConf) open(storeDir string) (records.Store, error) {
	if s.Type != storeEtcd {
		return records.NewLocal(storeDir)
	}
	return s.openEtcd()
}

// serveArgs are the sidecar flags that select the same store.
func (s storeConf) serveArgs() []string {
	if s.Type != storeEtcd {
		return nil
	}
	args := []string{flagStore, storeEtcd, flagEtcdPrefix, s.Prefix, flagEtcdHost, s.Host, flagEtcdTimeoutValue, s.etcd.RequestTimeout.String()}
	for _, ep := range s.Endpoints {
		args = append(args, flagEtcdEndpoint, ep)
	}
	for _, f := range []struct{ flag, value string }{{flagEtcdCert, s.TLS.CertFile}, {flagEtcdKey, s.TLS.KeyFile}, {flagEtcdCA, s.TLS.CAFile}} {
		if f.value != "" {
			args = append(args, f.flag, f.value)
		}
	}
	return args
}

// openStore opens the record store the call's config names.
func openStore(call *plugins.Call, c *conf) (records.Store, storeConf, error) {
	sc, err := readStoreConf(call.StdinData)
	if err != nil {
		return nil, sc, err
	}
	st, err := sc.open(c.StoreDir)
	return st, sc, err
}

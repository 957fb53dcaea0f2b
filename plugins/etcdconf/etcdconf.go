// Package etcdconf is the etcd part of every moor config's "store" (moor-ipam's
// ipam.store, moor-dns's store, moor-overlay's store): the JSON fields, their checks and the
// parsed Config that package etcdclient turns into a client. The fields and their syntax
// are the same in every plugin:
//
//	"endpoints": ["https://10.0.0.1:2379"], "tls": {"certFile": "", "keyFile": "", "caFile": ""},
//	"dialTimeout": "2s", "requestTimeout": "5s"
//
// A timeout is a Go duration string ("2s", "500ms") or a number of seconds (2, 0.5), and
// must be positive; certFile and keyFile go together. A refusal is code 7 naming the field
// (under the prefix the caller gives, e.g. "ipam.store") and the value.
//
// It imports nothing of etcd, on purpose: the lean binaries (moor-ipam, moor-bridge, ...)
// check an etcd store's config before they exec the binary that links the client
// (moor-ipam-etcd), so this package links into them and package etcdclient does not.
// What it does not do: open files or connect (etcdclient does; a TLS file that cannot be
// loaded is found there), or know a store's key prefix or layout (each store has its own).
package etcdconf

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/moornet/moor/plugins/codes"
)

// Defaults of the timeouts.
const (
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 5 * time.Second
)

// TLS names the client's TLS files: CertFile and KeyFile the client certificate, CAFile the
// authority that signs the servers' certificates. Empty: no TLS (unless an endpoint is
// https://, then the system's roots).
type TLS struct {
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	CAFile   string `json:"caFile,omitempty"`
}

// Any reports whether a TLS file is named.
func (t TLS) Any() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// Fields are the JSON fields; a store's config type embeds them next to its own.
type Fields struct {
	Endpoints      []string        `json:"endpoints,omitempty"`
	TLS            *TLS            `json:"tls,omitempty"`
	DialTimeout    json.RawMessage `json:"dialTimeout,omitempty"`
	RequestTimeout json.RawMessage `json:"requestTimeout,omitempty"`
}

// Set reports which fields the config sets, by JSON name (for stores that refuse them).
func (f Fields) Set() []string {
	var set []string
	if len(f.Endpoints) > 0 {
		set = append(set, "endpoints")
	}
	if f.TLS != nil {
		set = append(set, "tls")
	}
	if !isNull(f.DialTimeout) {
		set = append(set, "dialTimeout")
	}
	if !isNull(f.RequestTimeout) {
		set = append(set, "requestTimeout")
	}
	return set
}

// Config is the checked etcd configuration.
type Config struct {
	// Field is the config object the settings came from ("ipam.store", "store"); errors
	// name their fields under it.
	Field          string
	Endpoints      []string
	TLS            TLS
	DialTimeout    time.Duration // bounds the first connection; the client does not wait for it
	RequestTimeout time.Duration // bounds every request, retries included
	// PinKeyPair loads the client's key pair once, when the client is made, instead of on
	// every handshake: for a process that drops privileges after its start and could not
	// read a root-only key on a reconnect (the DNS sidecar). A rotated key pair then takes
	// a restart.
	PinKeyPair bool
	// Dial, when set, opens the TCP connections (for example inside another network
	// namespace, as the lab does). Nil: the default dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Config checks the fields and returns the Config; field is their object's name
// ("ipam.store"). Endpoints are required.
func (f Fields) Config(field string) (Config, error) {
	c := Config{Field: field, Endpoints: f.Endpoints, DialTimeout: DefaultDialTimeout, RequestTimeout: DefaultRequestTimeout}
	if f.TLS != nil {
		c.TLS = *f.TLS
	}
	if len(c.Endpoints) == 0 {
		return c, c.invalid("endpoints", "", "required: the etcd endpoints, e.g. [\"https://10.0.0.1:2379\"]")
	}
	for i, ep := range c.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return c, c.invalid(fmt.Sprintf("endpoints[%d]", i), ep, "empty endpoint")
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return c, c.invalid("tls", c.TLS.CertFile+c.TLS.KeyFile, "certFile and keyFile go together")
	}
	for _, d := range []struct {
		name string
		raw  json.RawMessage
		dst  *time.Duration
	}{{"dialTimeout", f.DialTimeout, &c.DialTimeout}, {"requestTimeout", f.RequestTimeout, &c.RequestTimeout}} {
		if isNull(d.raw) {
			continue
		}
		v, err := ParseDuration(d.raw)
		if err != nil {
			return c, c.invalid(d.name, strings.Trim(string(d.raw), `"`), err.Error())
		}
		*d.dst = v
	}
	return c, nil
}

// Name says which etcd the config reaches, for messages: "etcd https://a:2379,https://b:2379".
func (c Config) Name() string { return "etcd " + strings.Join(c.Endpoints, ",") }

// FieldError is a refused field: code 7, naming the field (its full name, e.g.
// "ipam.store.tls") and the value as given.
type FieldError struct {
	Field, Value, Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// CNICode implements codes.Coded.
func (e *FieldError) CNICode() uint { return codes.InvalidNetworkConfig }

func (c Config) invalid(name, value, reason string) error {
	return &FieldError{Field: c.FieldName(name), Value: value, Reason: reason}
}

// FieldName is the full name of one of the fields ("ipam.store.tls").
func (c Config) FieldName(name string) string {
	if c.Field == "" {
		return name
	}
	return c.Field + "." + name
}

// ParseDuration reads a timeout: a Go duration string ("2s") or a number of seconds (2,
// 0.5); it must be positive.
func ParseDuration(raw json.RawMessage) (time.Duration, error) {
	var (
		d   time.Duration
		err error
		s   string
	)
	if json.Unmarshal(raw, &s) == nil {
		d, err = time.ParseDuration(s)
	} else {
		var secs float64
		if secs, err = strconv.ParseFloat(string(raw), 64); err == nil {
			d = time.Duration(secs * float64(time.Second))
		}
	}
	if err != nil {
		return 0, fmt.Errorf(`not a duration (e.g. "2s" or a number of seconds)`)
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive")
	}
	return d, nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

package server

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/codes"
)

// Defaults of Options.
const (
	DefaultPort           = 53
	DefaultTTL            = 5 * time.Second
	DefaultDomain         = "dns.moor"
	DefaultResolvConf     = "/etc/resolv.conf"
	DefaultSystemdResolv  = "/run/systemd/resolve/resolv.conf"
	DefaultForwardTimeout = 400 * time.Millisecond
	DefaultMaxForwards    = 1024
	// DefaultMaxForwardsPerClient and DefaultMaxForwardsPerNetwork keep one container, or
	// one network, from taking every forwarding slot: a resolver rarely has more than a
	// few queries out at once.
	DefaultMaxForwardsPerClient  = 32
	DefaultMaxForwardsPerNetwork = 256
	// DefaultMaxTCPConns and DefaultMaxTCPConnsPerClient bound the open TCP connections
	// (one descriptor each), in all and per client address.
	DefaultMaxTCPConns          = 512
	DefaultMaxTCPConnsPerClient = 16
	DefaultTCPIdleTimeout       = 3 * time.Second // as aardvark-dns
	// DefaultUID and DefaultGID are the ids the server switches to after binding: a
	// dedicated pair outside the ranges Debian and systemd hand out (system accounts below
	// 1000, users 1000-60000, systemd-homed 60001-60513, DynamicUser 61184-65519, nobody
	// 65534), so that no other process shares them. Options.UID/GID (moor-dns serve --uid,
	// --gid) choose an account of the operator's instead.
	DefaultUID           = 61053
	DefaultGID           = 61053
	DefaultCacheSize     = 4096
	DefaultCacheMaxTTL   = 5 * time.Minute
	DefaultControlSocket = "/run/moor/dns.sock"
	DefaultPidFile       = "/run/moor/dns.pid"
	DefaultIdleTimeout   = 30 * time.Second
	DefaultNetnsCheck    = 5 * time.Second

	maxTTL      = 24 * time.Hour // largest TTL accepted for local answers
	maxUDPSize  = 1232           // largest UDP answer we send (DNS flag day 2020)
	maxUpstream = 3              // upstreams tried per query, as Docker does
)

// DefaultChain is the order of the handler stages, first to last. It is the one place the
// order lives; Options.Chain may leave stages out but not add unknown ones.
var DefaultChain = []string{"metrics", "guard", "acl", "local", "cache", "forward"}

// Options configure a Server. The zero value is usable: every field has a default.
type Options struct {
	// StoreDir is the Local store's directory (records.DefaultRoot when empty). Ignored when
	// Store is set.
	StoreDir string
	// Store, when set, is used instead of a Local store at StoreDir (`moor-dns serve
	// --store etcd` passes the etcdrecords store of overlay networks).
	// The server does not close a Store it was given.
	Store records.Store

	// Port the server listens on at every gateway address (DefaultPort when 0).
	Port int
	// TTL of local answers, at least one second (DefaultTTL when 0).
	TTL time.Duration
	// Domain is the search domain of networks that set none (DefaultDomain when empty).
	Domain string

	// Upstreams, when set, replace the resolvers read from ResolvConf ("ip" or "ip:port").
	Upstreams []string
	// ResolvConf is the host's resolver file (DefaultResolvConf when empty).
	ResolvConf string
	// SystemdResolvConf is read instead when ResolvConf lists only loopback stubs such as
	// 127.0.0.53 (DefaultSystemdResolv when empty).
	SystemdResolvConf string
	// ForwardTimeout is the time one upstream gets to answer before the next is tried
	// (DefaultForwardTimeout when 0).
	ForwardTimeout time.Duration
	// MaxForwards bounds the forwarded queries in flight; beyond it a query gets SERVFAIL at
	// once (DefaultMaxForwards when 0).
	MaxForwards int
	// MaxForwardsPerClient bounds the forwards in flight of one client address, and
	// MaxForwardsPerNetwork those of one network; beyond either a query gets SERVFAIL at
	// once (DefaultMaxForwardsPerClient, DefaultMaxForwardsPerNetwork when 0).
	MaxForwardsPerClient  int
	MaxForwardsPerNetwork int
	// MaxTCPConns bounds the open TCP connections of the server, MaxTCPConnsPerClient those
	// of one client address; a connection past either is closed as soon as it is accepted
	// (DefaultMaxTCPConns, DefaultMaxTCPConnsPerClient when 0). Idle connections are closed
	// after a few seconds whatever the bounds.
	MaxTCPConns          int
	MaxTCPConnsPerClient int
	// TCPIdleTimeout closes a TCP connection that sends no query for this long
	// (DefaultTCPIdleTimeout when 0).
	TCPIdleTimeout time.Duration
	// CacheSize bounds the entries of the forwarding cache (DefaultCacheSize when 0; a
	// negative value disables the cache).
	CacheSize int
	// CacheMaxTTL caps how long a forwarded answer is cached (DefaultCacheMaxTTL when 0).
	CacheMaxTTL time.Duration

	// ControlSocket is the unix socket of the HTTP control server (/healthz, /metrics,
	// /reload); DefaultControlSocket when empty and ControlAddr is empty.
	ControlSocket string
	// ControlAddr, when set, serves the control API on this loopback TCP address instead.
	ControlAddr string
	// PidFile is locked by Run to guarantee a single instance (DefaultPidFile when empty).
	PidFile string
	// IdleTimeout: Run returns after no network has had any record for this long
	// (DefaultIdleTimeout when 0; negative: never).
	IdleTimeout time.Duration
	// NetnsCheck is how often the server checks that its network namespace still exists
	// (is kept by anything but the server); once it does not, the server stops after
	// IdleTimeout (DefaultIdleTimeout when that is negative) even with records left.
	// DefaultNetnsCheck when 0; negative: never check.
	NetnsCheck time.Duration
	// KeepPrivileges skips dropping privileges after binding (for tests). By default the
	// server switches to UID/GID with CAP_NET_BIND_SERVICE alone and a seccomp filter, which
	// needs a binary built with CGO_ENABLED=0 (see DropPrivileges).
	KeepPrivileges bool
	// UID and GID are the ids the server switches to after binding (DefaultUID, DefaultGID
	// when 0; root cannot be asked for). Ignored with KeepPrivileges.
	UID, GID int
	// FirewallRepair runs a firewall Repairer for the server's namespace (see the package
	// doc): moor's rules come back by themselves after a firewall reload. It keeps
	// CAP_NET_ADMIN after the drop (and, where the networks use iptables, CAP_NET_RAW and
	// exec). moor-dns serve turns it on unless --firewall-repair=false.
	FirewallRepair bool
	// FirewallRunDir is the run directory of the firewall's State and lock (statefs.RunDir
	// when empty).
	FirewallRunDir string

	// Chain lists the handler stages to run, in DefaultChain's order (DefaultChain when nil).
	Chain []string
	// Logger receives the server's log (slog.Default() when nil).
	Logger *slog.Logger
}

// ConfigError reports an option with a bad value.
type ConfigError struct {
	Field, Value, Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("dns server option %s=%q: %s", e.Field, e.Value, e.Reason)
}

// CNICode maps the error to "invalid network config".
func (e *ConfigError) CNICode() uint { return codes.InvalidNetworkConfig }

// withDefaults returns a copy of o with defaults filled in, or a *ConfigError.
func (o Options) withDefaults() (Options, error) {
	if o.StoreDir == "" {
		o.StoreDir = records.DefaultRoot
	}
	// Start may change the working directory (to read the store unprivileged): relative
	// paths are resolved first.
	for _, p := range []*string{&o.StoreDir, &o.ControlSocket, &o.PidFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return o, &ConfigError{"path", *p, err.Error()}
			}
			*p = abs
		}
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.Port < 0 || o.Port > 65535 {
		return o, &ConfigError{"Port", fmt.Sprint(o.Port), "not a port number"}
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < time.Second || o.TTL > maxTTL {
		return o, &ConfigError{"TTL", o.TTL.String(), "must be between 1s and 24h"}
	}
	if o.Domain == "" {
		o.Domain = DefaultDomain
	}
	o.Domain = strings.ToLower(strings.TrimSuffix(o.Domain, "."))
	if err := records.ValidName(o.Domain); err != nil {
		return o, &ConfigError{"Domain", o.Domain, err.Error()}
	}
	for i, u := range o.Upstreams {
		n, err := records.NormalizeUpstream(u)
		if err != nil {
			return o, &ConfigError{"Upstreams", u, err.Error()}
		}
		o.Upstreams[i] = n
	}
	if o.ResolvConf == "" {
		o.ResolvConf = DefaultResolvConf
	}
	if o.SystemdResolvConf == "" {
		o.SystemdResolvConf = DefaultSystemdResolv
	}
	if o.ForwardTimeout == 0 {
		o.ForwardTimeout = DefaultForwardTimeout
	}
	if o.ForwardTimeout < 0 {
		return o, &ConfigError{"ForwardTimeout", o.ForwardTimeout.String(), "must be positive"}
	}
	for _, b := range []struct {
		field string
		v     *int
		def   int
	}{
		{"MaxForwards", &o.MaxForwards, DefaultMaxForwards},
		{"MaxForwardsPerClient", &o.MaxForwardsPerClient, DefaultMaxForwardsPerClient},
		{"MaxForwardsPerNetwork", &o.MaxForwardsPerNetwork, DefaultMaxForwardsPerNetwork},
		{"MaxTCPConns", &o.MaxTCPConns, DefaultMaxTCPConns},
		{"MaxTCPConnsPerClient", &o.MaxTCPConnsPerClient, DefaultMaxTCPConnsPerClient},
		{"UID", &o.UID, DefaultUID},
		{"GID", &o.GID, DefaultGID},
	} {
		if *b.v == 0 {
			*b.v = b.def
		}
		if *b.v < 0 {
			return o, &ConfigError{b.field, fmt.Sprint(*b.v), "must be positive"}
		}
	}
	if o.TCPIdleTimeout == 0 {
		o.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if o.TCPIdleTimeout < 0 {
		return o, &ConfigError{"TCPIdleTimeout", o.TCPIdleTimeout.String(), "must be positive"}
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.CacheMaxTTL == 0 {
		o.CacheMaxTTL = DefaultCacheMaxTTL
	}
	if o.ControlAddr != "" {
		ap, err := netip.ParseAddrPort(o.ControlAddr)
		if err != nil || !ap.Addr().IsLoopback() {
			return o, &ConfigError{"ControlAddr", o.ControlAddr, "must be a loopback ip:port"}
		}
	} else if o.ControlSocket == "" {
		o.ControlSocket = DefaultControlSocket
	}
	if o.PidFile == "" {
		o.PidFile = DefaultPidFile
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.NetnsCheck == 0 {
		o.NetnsCheck = DefaultNetnsCheck
	}
	if o.Chain == nil {
		o.Chain = DefaultChain
	}
	if err := validChain(o.Chain); err != nil {
		return o, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// validChain checks that chain names known stages, each once, in DefaultChain's order, and
// keeps the stages every answer depends on.
func validChain(chain []string) error {
	last := -1
	for _, name := range chain {
		i := slices.Index(DefaultChain, name)
		if i < 0 {
			return &ConfigError{"Chain", name, "unknown stage; known: " + strings.Join(DefaultChain, ", ")}
		}
		if i <= last {
			return &ConfigError{"Chain", strings.Join(chain, ","), "stages must appear once, in the order " + strings.Join(DefaultChain, ", ")}
		}
		last = i
	}
	for _, must := range []string{"acl", "local"} {
		if !slices.Contains(chain, must) {
			return &ConfigError{"Chain", strings.Join(chain, ","), "stage " + must + " is required"}
		}
	}
	return nil
}

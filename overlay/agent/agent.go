// Package agent is `moor-overlay agent`: the daemon that keeps one host's overlay data
// plane in step with the store. Per network it claims (or finds again) the host's lease,
// prepares the host (VXLAN device, bridge, gateway, masquerade), keeps a heartbeat alive,
// applies every other host's join and leave as the etcd watch reports them, runs a full
// resync every Options.Resync that deletes any kernel entry the store does not justify and
// writes any that is missing (counted as drift), and reclaims the leases of hosts whose
// heartbeat has expired. It also puts the networks' nftables rules (moor-overlay's table:
// masquerade, icc false, internal) back when someone flushes the ruleset or deletes the
// table: on every nftables change of the host namespace not committed by moor itself
// (package nftwatch) and, as a
// backstop for lost events, at every resync; the rules are rebuilt from the configs and
// the lease the agent holds, only when missing or changed, so repeated flushes never
// leave duplicates, and no other table is touched.
//
// It serves, on a unix socket (default /run/moor/overlay-agent.sock, mode 0600) or a
// loopback TCP address: GET /healthz (200 when every network, or the one named by
// ?network=, is synced), GET /status (JSON per network: its data plane, lease, peers,
// last sync, last error; on a WireGuard network also the host's public key and endpoint
// and, per peer, the device's view of it and a reachability and full-size probe, so the
// status names a peer that cannot be reached and why; on a VXLAN network the VTEP MACs),
// GET /metrics (Prometheus text: peers, readiness, resyncs, resync duration, drift,
// events, store errors, reclaimed leases, firewall repairs), POST /rotate-key (a new WireGuard key: on the
// device first, then in the lease in one transaction) and POST /leave (release the
// leases, delete the tunnel devices, and stop).
//
// Design decisions, and why:
//   - one agent serves every network given to it (--config, repeatable): one process, one
//     etcd client and one control socket per host, however many overlay networks it has;
//   - etcd being away never tears down the data plane: the kernel keeps forwarding with
//     the entries it has, the agent retries with backoff and resyncs when etcd is back;
//   - a host whose own lease disappears (reclaimed while it was cut off, or released
//     elsewhere) claims one again; its hosts/ memory gives it the same subnet when free;
//   - leaving keeps the bridge, so containers still on it keep local connectivity.
//
// What it does not do: configure containers (the plugin does) or serve DNS.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/overlay/hostnet"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/plugins"
)

// DefaultResync is the period of the full resync.
const DefaultResync = 10 * time.Second

// leaveTimeout bounds the release of the leases on leave; shutdownGrace the answer to it.
const (
	leaveTimeout  = 10 * time.Second
	shutdownGrace = 2 * time.Second
)

// ErrLeft is returned by Run after a POST /leave succeeded.
var ErrLeft = errors.New("the host left the overlay")

// Options configure the agent.
type Options struct {
	// Configs are the networks to serve (netconf.ParseFile of each --config).
	Configs []*netconf.Conf
	// HostID overrides every config's hostID (and /etc/machine-id).
	HostID string
	// Listen is the control endpoint: a unix socket path ("unix:" prefix optional) or a
	// loopback ip:port. Empty: the first config's agentSocket.
	Listen string
	// Resync is the full resync period (DefaultResync when zero).
	Resync time.Duration
	// Logger (slog.Default() when nil).
	Logger *slog.Logger
	// Dial opens etcd connections (nil: the default dialer).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Netns, when set, is the path of the namespace to keep the data plane in (tests run
	// agents in process this way); empty: the process's own, as `moor-overlay agent` runs.
	Netns string
}

// Agent is a running agent.
type Agent struct {
	opts    Options
	nets    []*network
	host    hostnet.Host
	closeNS func()
	log     *slog.Logger
	left    chan struct{}
	leftOne sync.Once
	leaveMu sync.Mutex
	stop    context.CancelFunc
	wg      sync.WaitGroup
	// fwEvents: nftables events of the host namespace are watched (watchFirewall).
	fwEvents atomic.Bool
}

func (o *Options) defaults() error {
	if len(o.Configs) == 0 {
		return errors.New("agent: no network config given")
	}
	if o.Listen == "" {
		o.Listen = o.Configs[0].AgentSocket
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// New checks the options and opens the etcd clients; nothing is changed yet.
func New(opts Options) (*Agent, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	host, closeNS, err := openHost(opts.Netns)
	if err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, host: host, closeNS: closeNS, log: opts.Logger, left: make(chan struct{})}
	seen := map[string]bool{}
	for _, c := range opts.Configs {
		if seen[c.Name] {
			a.Close()
			return nil, fmt.Errorf("agent: network %q is given twice", c.Name)
		}
		seen[c.Name] = true
		id, err := c.ResolveHostID(opts.HostID)
		if err != nil {
			a.Close()
			return nil, err
		}
		cli, err := hostnet.Client(c, opts.Dial)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.nets = append(a.nets, &network{conf: c, hostID: id, cli: cli, reg: hostnet.Registry(cli, c), host: host, h: host.Handle,
			log: a.log.With("network", c.Name, "host", id), resync: opts.Resync})
	}
	return a, nil
}

// Close releases the clients and the netlink handle.
func (a *Agent) Close() {
	for _, n := range a.nets {
		_ = n.cli.Close()
	}
	a.closeNS()
}

// openHost opens the data plane's namespace: the process's own, or the one at path.
func openHost(path string) (hostnet.Host, func(), error) {
	if path == "" {
		h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return hostnet.Host{}, nil, fmt.Errorf("agent: netlink: %w", err)
		}
		return hostnet.Host{Handle: h}, h.Close, nil
	}
	netns, err := plugins.OpenNetns(path)
	if err != nil {
		return hostnet.Host{}, nil, err
	}
	h, nsh, err := plugins.NetlinkAt(path)
	if err != nil {
		netns.Close()
		return hostnet.Host{}, nil, err
	}
	return hostnet.Host{Handle: h, NS: netns}, func() { h.Close(); nsh.Close(); netns.Close() }, nil
}

// Run serves until ctx ends (nil) or a leave completes (ErrLeft). It closes the agent.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	srv, err := a.listen()
	if err != nil {
		return err
	}
	netCtx, stop := context.WithCancel(ctx)
	a.stop = stop
	for _, n := range a.nets {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); n.run(netCtx) }()
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.watchFirewall(netCtx) }()
	select {
	case <-ctx.Done():
		stop()
		a.wg.Wait()
		srv.Stop(0)
		return nil
	case <-a.left:
		srv.Stop(shutdownGrace) // let the /leave handler finish its answer
		return ErrLeft
	}
}

// doLeave stops the networks, releases their leases and removes their devices. The
// caller signals Run to return (a.left) once it has answered.
func (a *Agent) doLeave() error {
	a.leaveMu.Lock()
	defer a.leaveMu.Unlock()
	a.stop()
	a.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	var errs []error
	for _, n := range a.nets {
		errs = append(errs, n.leave(ctx))
	}
	return errors.Join(errs...)
}

// rotateKeys rotates the key of every encrypted network (rotate); a clear network is an
// error only when it is the only one.
func (a *Agent) rotateKeys(ctx context.Context) (int, error) {
	var errs []error
	rotated := 0
	for _, n := range a.nets {
		if !n.conf.Encrypted() {
			continue
		}
		if err := n.rotate(ctx); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.conf.Name, err))
			continue
		}
		rotated++
	}
	if rotated == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no network of this agent is encrypted"))
	}
	return rotated, errors.Join(errs...)
}

// RotateKeys rotates the keys of opts' encrypted networks without a running agent: the
// key files only; the agent's next start publishes the new keys.
func RotateKeys(opts Options) error {
	var errs []error
	for _, c := range opts.Configs {
		if c.Encrypted() {
			_, err := hostnet.RotateKey(c)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leave releases the host's leases and removes its VXLAN devices without a running agent.
func Leave(ctx context.Context, opts Options) error {
	a, err := New(opts)
	if err != nil {
		return err
	}
	defer a.Close()
	var errs []error
	for _, n := range a.nets {
		errs = append(errs, n.leave(ctx))
	}
	return errors.Join(errs...)
}

// Ready reports whether every network is synced.
func (a *Agent) Ready() bool {
	for _, n := range a.nets {
		if !n.ready.Load() {
			return false
		}
	}
	return true
}

// Status is what GET /status returns.
type Status struct {
	Networks []NetworkStatus `json:"networks"`
	// FirewallEvents: the agent watches the host's nftables events and repairs the
	// networks' rules at once; false: at each resync only.
	FirewallEvents bool `json:"firewallEvents"`
}

// NetworkStatus is one network's state. Plane says which data plane carries it; the
// fields of the other plane are left out (vtepMAC is VXLAN's, publicKey and endpoint
// WireGuard's).
type NetworkStatus struct {
	Name     string `json:"name"`
	HostID   string `json:"hostID"`
	Ready    bool   `json:"ready"`
	Plane    string `json:"plane"`
	Subnet   string `json:"subnet,omitempty"`
	Gateway  string `json:"gateway,omitempty"`
	VTEPMAC  string `json:"vtepMAC,omitempty"`
	Underlay string `json:"underlay,omitempty"`
	// PublicKey and Endpoint are what this host publishes in its lease (WireGuard).
	PublicKey string       `json:"publicKey,omitempty"`
	Endpoint  string       `json:"endpoint,omitempty"`
	Peers     []PeerStatus `json:"peers"`
	LastSync  string       `json:"lastSync,omitempty"`
	LastError string       `json:"lastError,omitempty"`
	Resyncs   int64        `json:"resyncs"`
	Drift     int64        `json:"drift"`
	// FirewallRepairs counts the times the network's nftables rules (moor-overlay's
	// table) were found removed or changed and re-applied; LastFirewallRepair is RFC 3339.
	FirewallRepairs    int64  `json:"firewallRepairs"`
	LastFirewallRepair string `json:"lastFirewallRepair,omitempty"`
	// Problems names each peer the data plane's probe could not reach in full (planes
	// with a probe only: WireGuard), with the cause.
	Problems []string `json:"problems,omitempty"`
}

// PeerStatus is one other host as this one sees it.
type PeerStatus struct {
	HostID   string `json:"hostID"`
	Subnet   string `json:"subnet"`
	VTEPMAC  string `json:"vtepMAC,omitempty"`
	Underlay string `json:"underlay"`
	// WireGuard is the peer's state on an encrypted network (nil on a clear one).
	WireGuard *WireGuardPeer `json:"wireguard,omitempty"`
}

// WireGuardPeer is one peer of the host's WireGuard device and what probing it found.
type WireGuardPeer struct {
	// PublicKey is the key the peer's lease publishes; Fingerprint its first 8 base64
	// characters (how logs and humans compare keys).
	PublicKey   string `json:"publicKey"`
	Fingerprint string `json:"fingerprint"`
	// InDevice: the device holds a peer under PublicKey (false: the agent has not applied
	// the lease yet). Endpoint, AllowedIPs and the counters are that peer's.
	InDevice   bool     `json:"inDevice"`
	Endpoint   string   `json:"endpoint,omitempty"`
	AllowedIPs []string `json:"allowedIPs,omitempty"`
	// LastHandshake is RFC 3339, empty when there was none.
	LastHandshake string `json:"lastHandshake,omitempty"`
	RxBytes       int64  `json:"rxBytes"`
	TxBytes       int64  `json:"txBytes"`
	// Reachable: a small echo through the tunnel was answered; FullSize: one of MTU bytes
	// with "do not fragment" was; Problem names the cause otherwise.
	Reachable bool   `json:"reachable"`
	FullSize  bool   `json:"fullSize"`
	MTU       int    `json:"mtu"`
	Problem   string `json:"problem,omitempty"`
}

func (a *Agent) status() Status {
	s := Status{FirewallEvents: a.fwEvents.Load()}
	for _, n := range a.nets {
		ns := n.snapshot()
		n.probe(&ns)
		s.Networks = append(s.Networks, ns)
	}
	return s
}

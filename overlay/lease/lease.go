// Package lease keeps the host leases of overlay networks in etcd: which host holds which
// subnet of a network's range, at which underlay address, with which VTEP MAC, and whether
// the host is still alive.
//
// Layout, under <prefix>/<network>/:
//
//	config          the network's parameters (range, host subnet length, VNI, port, data
//	                plane); the first host writes it, every later host must match it
//	                (*MismatchError, code 7)
//	leases/<subnet> a Lease (JSON); created with a transaction on Version == 0, so two hosts
//	                can never hold one subnet
//	hosts/<hostID>  the host's memory: its last subnet and VTEP MAC; kept when a lease is
//	                reclaimed, so a host coming back gets the same subnet (if still free) and
//	                the same MAC
//	alive/<hostID>  the heartbeat: a key attached to an etcd lease of the network's lease TTL,
//	                kept alive by the host's agent
//
// A lease whose alive key has vanished (the etcd lease expired: no heartbeat for a whole
// TTL) is reclaimed by any agent (Reclaim), in a transaction that re-checks both keys. An
// ADD on a host without an agent creates the alive key when it is missing, so the host
// counts as alive for one TTL.
//
// A lease also carries the public per-host data of the network's data plane (PlaneData:
// the plane's type and layout version, and for an encrypting plane the host's public key
// and endpoint). It is optional and added beside the older fields, so a lease written
// before it decodes (Plane is nil: the clear VXLAN plane, whose only per-host datum, the
// VTEP MAC, has its own field), and an agent that predates it reads a newer lease and
// ignores the field. Nothing secret is ever written here.
//
// The VTEP MAC is derived from the network and host ID (a locally administered unicast
// address), so it is stable even across a --leave; the stored one wins when present.
//
// Every call is bounded by Options.Timeout and turns an unreachable or leaderless etcd into
// *UnavailableError (CNI code 11).
//
// What it does not do: touch the kernel, or keep the heartbeat alive (the agent calls Beat
// and the client's KeepAlive).
package lease

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key parts.
const (
	configKey     = "config"
	leasesDir     = "leases/"
	hostsDir      = "hosts/"
	aliveDir      = "alive/"
	subnetSep     = "-" // "10.240.3.0-24": a '/' would nest keys
	macLen        = 6
	localAdminBit = 0x02
	multicastBit  = 0x01
)

// DefaultTimeout bounds each operation when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Spec is what every host of a network must agree on.
type Spec struct {
	Range         netip.Prefix `json:"range"`
	HostSubnetLen int          `json:"hostSubnetLen"`
	VNI           int          `json:"vni"`
	Port          int          `json:"port"`
	// Plane is the network's data plane ("vxlan", "wireguard"): a host of one plane
	// cannot talk to a host of another. Empty in a config stored before the field
	// existed; the first host that joins such a network records its own (see ensureSpec).
	Plane string `json:"plane,omitempty"`
}

// Lease is one host's hold on a subnet.
type Lease struct {
	HostID   string           `json:"hostID"`
	Subnet   netip.Prefix     `json:"subnet"`
	Underlay netip.Addr       `json:"underlay"`
	VTEPMAC  net.HardwareAddr `json:"-"`
	MAC      string           `json:"vtepMAC"`
	Created  time.Time        `json:"created"`
	// Plane is the host's data plane's public data; nil in a lease written before it
	// existed (the clear VXLAN plane).
	Plane *PlaneData `json:"plane,omitempty"`
	// Revision is the etcd modification revision of the lease key.
	Revision int64 `json:"-"`
}

// DefaultPlane is the data plane of a lease without PlaneData.
const DefaultPlane = "vxlan"

// PlaneData is what a host's data plane publishes to the other hosts: public data only.
type PlaneData struct {
	// Type names the data plane that wrote it ("vxlan"; "wireguard" next).
	Type string `json:"type"`
	// Version is the layout of the fields below for Type, from 1. Fields are only ever
	// added, never reinterpreted, so a reader that knows an older version uses the fields
	// it knows.
	Version int `json:"version"`
	// PublicKey is the host's public key (base64) for a plane that encrypts.
	PublicKey string `json:"publicKey,omitempty"`
	// Endpoint is where the host's plane receives (underlay address and port), for a
	// plane whose port is the host's own rather than the network's.
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
}

// PlaneType is the data plane the lease's host runs: Plane.Type, or DefaultPlane.
func (l Lease) PlaneType() string {
	if l.Plane == nil {
		return DefaultPlane
	}
	return l.Plane.Type
}

// samePlane compares two optional PlaneData.
func samePlane(a, b *PlaneData) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Gateway is the subnet's first address: the bridge's address on the host and the VTEP
// address other hosts route the subnet through.
func (l Lease) Gateway() netip.Addr { return l.Subnet.Addr().Next() }

type hostMemory struct {
	Subnet netip.Prefix `json:"subnet"`
	MAC    string       `json:"vtepMAC"`
}

// Options configure a Registry.
type Options struct {
	// Prefix is the store's key prefix (e.g. /moor/overlay); the network's name is appended.
	Prefix  string
	Network string
	Spec    Spec
	// Timeout bounds each operation (DefaultTimeout when zero).
	Timeout time.Duration
}

// Registry reads and writes one network's leases. It does not own the client.
type Registry struct {
	cli     *clientv3.Client
	base    string // <prefix>/<network>/
	network string
	spec    Spec
	timeout time.Duration
}

// New returns the registry of one network over cli.
func New(cli *clientv3.Client, o Options) *Registry {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return &Registry{
		cli:     cli,
		base:    strings.TrimSuffix(o.Prefix, "/") + "/" + o.Network + "/",
		network: o.Network,
		spec:    o.Spec,
		timeout: o.Timeout,
	}
}

// Network returns the network's name.
func (r *Registry) Network() string { return r.network }

// Prefix returns the key prefix of the network (for watches).
func (r *Registry) Prefix() string { return r.base }

func (r *Registry) leaseKey(s netip.Prefix) string {
	return r.base + leasesDir + s.Addr().String() + subnetSep + strconv.Itoa(s.Bits())
}
func (r *Registry) hostKey(id string) string  { return r.base + hostsDir + id }
func (r *Registry) aliveKey(id string) string { return r.base + aliveDir + id }

// VTEPMAC derives the VTEP MAC of a host on a network.
func VTEPMAC(network, hostID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("moor-overlay\x00" + network + "\x00" + hostID))
	mac := net.HardwareAddr(sum[:macLen])
	mac[0] = (mac[0] | localAdminBit) &^ multicastBit
	return mac
}

func (r *Registry) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), r.timeout)
}

// Status does one linearizable read: nil when etcd can serve the network now.
func (r *Registry) Status(ctx context.Context) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := r.cli.Get(ctx, r.base+configKey)
	return classify("status", err)
}

// List returns every lease of the network, ordered by subnet, and the store revision read.
func (r *Registry) List(ctx context.Context) ([]Lease, int64, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.base+leasesDir, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, classify("listing leases", err)
	}
	out := make([]Lease, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		l, err := decodeLease(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, &StoreError{Op: "reading " + string(kv.Key), Err: err}
		}
		out = append(out, l)
	}
	return out, resp.Header.Revision, nil
}

func decodeLease(data []byte, rev int64) (Lease, error) {
	var l Lease
	if err := json.Unmarshal(data, &l); err != nil {
		return Lease{}, err
	}
	mac, err := net.ParseMAC(l.MAC)
	if err != nil || len(mac) != macLen {
		return Lease{}, fmt.Errorf("vtepMAC %q: not a MAC address", l.MAC)
	}
	if !l.Subnet.IsValid() || !l.Underlay.IsValid() || l.HostID == "" {
		return Lease{}, fmt.Errorf("incomplete lease %s", data)
	}
	if l.Plane != nil && (l.Plane.Type == "" || l.Plane.Version < 1) {
		return Lease{}, fmt.Errorf("plane %+v: a data plane's data needs its type and a version from 1", *l.Plane)
	}
	l.VTEPMAC, l.Revision = mac, rev
	return l, nil
}

func encodeLease(l Lease) string {
	l.MAC = l.VTEPMAC.String()
	data, _ := json.Marshal(l) // only plain fields: cannot fail
	return string(data)
}

// Own returns the host's lease, if it holds one.
func (r *Registry) Own(ctx context.Context, hostID string) (Lease, bool, error) {
	leases, _, err := r.List(ctx)
	if err != nil {
		return Lease{}, false, err
	}
	for _, l := range leases {
		if l.HostID == hostID {
			return l, true, nil
		}
	}
	return Lease{}, false, nil
}

// Beat grants an etcd lease of ttl and attaches the host's alive key to it, replacing any
// earlier one. The caller keeps it alive (clientv3 KeepAlive) and calls Beat again when it
// is lost.
func (r *Registry) Beat(ctx context.Context, hostID string, ttl time.Duration) (clientv3.LeaseID, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	g, err := r.cli.Grant(ctx, ttlSeconds(ttl))
	if err != nil {
		return 0, classify("granting the heartbeat lease", err)
	}
	if _, err := r.cli.Put(ctx, r.aliveKey(hostID), time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(g.ID)); err != nil {
		return 0, classify("writing the heartbeat", err)
	}
	return g.ID, nil
}

func ttlSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// Release deletes the host's lease, memory and heartbeat: the subnet is free and every
// other host drops its entries for this one. Releasing a host without a lease is not an error.
func (r *Registry) Release(ctx context.Context, hostID string) (Lease, bool, error) {
	own, ok, err := r.Own(ctx, hostID)
	if err != nil {
		return Lease{}, false, err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpDelete(r.hostKey(hostID)), clientv3.OpDelete(r.aliveKey(hostID))}
	if ok {
		ops = append(ops, clientv3.OpDelete(r.leaseKey(own.Subnet)))
	}
	if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return Lease{}, false, classify("releasing the lease of "+hostID, err)
	}
	return own, ok, nil
}

// Reclaim deletes every lease whose host has no heartbeat any more and returns them. Each
// deletion re-checks, in its transaction, that the lease is unchanged and the heartbeat
// still absent, so a host that comes back at that moment keeps its lease.
func (r *Registry) Reclaim(ctx context.Context) ([]Lease, error) {
	leases, _, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.base+aliveDir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, classify("listing heartbeats", err)
	}
	alive := map[string]bool{}
	for _, kv := range resp.Kvs {
		alive[strings.TrimPrefix(string(kv.Key), r.base+aliveDir)] = true
	}
	var out []Lease
	for _, l := range leases {
		if alive[l.HostID] {
			continue
		}
		key := r.leaseKey(l.Subnet)
		txn, err := r.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision),
			clientv3.Compare(clientv3.Version(r.aliveKey(l.HostID)), "=", 0),
		).Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return out, classify("reclaiming "+key, err)
		}
		if txn.Succeeded {
			out = append(out, l)
		}
	}
	return out, nil
}

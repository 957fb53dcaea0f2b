package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxClaimAttempts bounds the retries when other hosts take the chosen subnet first. After
// the first attempt a host picks at random among the free subnets, so a crowd of hosts
// starting at once spreads out instead of queueing for the same one.
const maxClaimAttempts = 32

// Request is one host's claim.
type Request struct {
	HostID   string
	Underlay netip.Addr
	// Plane is the host's data plane's public data (nil: none).
	Plane *PlaneData
	// TTL of the heartbeat created when the host has none yet.
	TTL time.Duration
}

// Acquire returns the host's lease, claiming one when it has none: the subnet it held last
// (hosts/<id>) when still free, else the first free subnet of the range that no other host
// remembers, else the first free one. The lease's underlay address is updated when it
// changed, and so is its data plane's public data (a rotated key). The heartbeat is created when missing. created reports a new claim, which the
// caller releases again (Release) if its own operation fails.
func (r *Registry) Acquire(ctx context.Context, req Request) (l Lease, created bool, err error) {
	if err := r.ensureSpec(ctx); err != nil {
		return Lease{}, false, err
	}
	for attempt := range maxClaimAttempts {
		l, created, err = r.acquireOnce(ctx, req, attempt > 0)
		if !errors.Is(err, errLostRace) {
			break
		}
	}
	if errors.Is(err, errLostRace) {
		return Lease{}, false, &StoreError{Op: "claiming a subnet", Err: fmt.Errorf("lost the race to other hosts %d times", maxClaimAttempts)}
	}
	if err != nil {
		return Lease{}, false, err
	}
	if err := r.ensureAlive(ctx, req.HostID, req.TTL); err != nil {
		return Lease{}, false, err
	}
	return l, created, nil
}

var errLostRace = errors.New("another host changed the leases first")

func (r *Registry) acquireOnce(ctx context.Context, req Request, spread bool) (Lease, bool, error) {
	leases, _, err := r.List(ctx)
	if err != nil {
		return Lease{}, false, err
	}
	memories, err := r.memories(ctx)
	if err != nil {
		return Lease{}, false, err
	}
	mem, remembered := memories[req.HostID]
	mac := VTEPMAC(r.network, req.HostID)
	if remembered {
		if m, err := net.ParseMAC(mem.MAC); err == nil && len(m) == macLen {
			mac = m
		}
	}
	leased := map[netip.Prefix]bool{}
	for _, l := range leases {
		if l.HostID == req.HostID {
			return r.refresh(ctx, l, req)
		}
		leased[l.Subnet] = true
	}
	subnet, ok := r.pick(leased, memories, mem.Subnet, req.HostID, spread)
	if !ok {
		return Lease{}, false, &NoSubnetError{Range: r.spec.Range.String(), HostSubnetLen: r.spec.HostSubnetLen, Leased: len(leased)}
	}
	l := Lease{HostID: req.HostID, Subnet: subnet, Underlay: req.Underlay, VTEPMAC: mac, Created: time.Now().UTC(), Plane: req.Plane}
	memData, _ := json.Marshal(hostMemory{Subnet: subnet, MAC: mac.String()})
	key := r.leaseKey(subnet)
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	txn, err := r.cli.Txn(cctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, encodeLease(l)), clientv3.OpPut(r.hostKey(req.HostID), string(memData))).Commit()
	if err != nil {
		return Lease{}, false, classify("claiming "+key, err)
	}
	if !txn.Succeeded {
		return Lease{}, false, errLostRace
	}
	l.Revision = txn.Header.Revision
	return l, true, nil
}

// refresh updates the underlay address and the plane data of the host's own lease when
// they changed.
func (r *Registry) refresh(ctx context.Context, l Lease, req Request) (Lease, bool, error) {
	if l.Underlay == req.Underlay && samePlane(l.Plane, req.Plane) {
		return l, false, nil
	}
	l.Underlay, l.Plane = req.Underlay, req.Plane
	l, ok, err := r.putIfUnchanged(ctx, l)
	if err == nil && !ok {
		err = errLostRace
	}
	return l, false, err
}

// putIfUnchanged writes l over the host's lease if the lease's revision is still
// l.Revision; ok is false when it changed.
func (r *Registry) putIfUnchanged(ctx context.Context, l Lease) (_ Lease, ok bool, _ error) {
	key := r.leaseKey(l.Subnet)
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	txn, err := r.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).
		Then(clientv3.OpPut(key, encodeLease(l))).Commit()
	if err != nil {
		return Lease{}, false, classify("updating "+key, err)
	}
	if !txn.Succeeded {
		return Lease{}, false, nil
	}
	l.Revision = txn.Header.Revision
	return l, true, nil
}

// Publish writes plane as the public plane data of the host's lease l (a rotated key), in
// one transaction on l's revision: the fast path of a rotation. A lease changed meanwhile
// (or gone) is *StaleError; the caller then goes the whole way (Acquire).
func (r *Registry) Publish(ctx context.Context, l Lease, plane *PlaneData) (Lease, error) {
	l.Plane = plane
	nl, ok, err := r.putIfUnchanged(ctx, l)
	if err == nil && !ok {
		err = &StaleError{Key: r.leaseKey(l.Subnet), Revision: l.Revision}
	}
	return nl, err
}

// pick chooses a free subnet: the host's last one, else the first one nobody remembers
// (with spread: a random one of those), else the first free one.
func (r *Registry) pick(leased map[netip.Prefix]bool, memories map[string]hostMemory, last netip.Prefix, hostID string, spread bool) (netip.Prefix, bool) {
	if last.IsValid() && !leased[last] && r.spec.Range.Contains(last.Addr()) && last.Bits() == r.spec.HostSubnetLen {
		return last, true
	}
	remembered := map[netip.Prefix]bool{}
	for id, m := range memories {
		if id != hostID {
			remembered[m.Subnet] = true
		}
	}
	var fallback netip.Prefix
	var free []netip.Prefix
	count := 1 << (r.spec.HostSubnetLen - r.spec.Range.Bits())
	step := uint32(1) << (ipv4Bits - r.spec.HostSubnetLen)
	base := be32(r.spec.Range.Addr())
	for i := range count {
		s := netip.PrefixFrom(fromBE32(base+uint32(i)*step), r.spec.HostSubnetLen)
		if leased[s] {
			continue
		}
		if !remembered[s] {
			if !spread {
				return s, true
			}
			free = append(free, s)
		}
		if !fallback.IsValid() {
			fallback = s
		}
	}
	if len(free) > 0 {
		return free[rand.IntN(len(free))], true
	}
	return fallback, fallback.IsValid()
}

const ipv4Bits = 32

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromBE32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (r *Registry) memories(ctx context.Context) (map[string]hostMemory, error) {
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(cctx, r.base+hostsDir, clientv3.WithPrefix())
	if err != nil {
		return nil, classify("listing hosts", err)
	}
	out := make(map[string]hostMemory, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m hostMemory
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			continue // a damaged memory only costs the host its old subnet
		}
		out[string(kv.Key[len(r.base+hostsDir):])] = m
	}
	return out, nil
}

// ensureSpec writes the network's parameters if absent and compares them otherwise.
func (r *Registry) ensureSpec(ctx context.Context) error {
	want, _ := json.Marshal(r.spec)
	key := r.base + configKey
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	txn, err := r.cli.Txn(cctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(want))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return classify("registering network "+r.network, err)
	}
	if txn.Succeeded {
		return nil
	}
	kvs := txn.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil
	}
	var have Spec
	if err := json.Unmarshal(kvs[0].Value, &have); err != nil {
		return &StoreError{Op: "reading " + key, Err: err}
	}
	for _, f := range []struct {
		name         string
		stored, conf string
		hint         string
	}{
		{"subnet", have.Range.String(), r.spec.Range.String(), ""},
		{"hostSubnetLen", strconv.Itoa(have.HostSubnetLen), strconv.Itoa(r.spec.HostSubnetLen), ""},
		{"vni", strconv.Itoa(have.VNI), strconv.Itoa(r.spec.VNI), ""},
		{"port", strconv.Itoa(have.Port), strconv.Itoa(r.spec.Port), ""},
		{"plane", have.Plane, r.spec.Plane, planeHint},
	} {
		if f.stored != f.conf && f.stored != "" {
			return &MismatchError{Network: r.network, Field: f.name, Stored: f.stored, Config: f.conf, Hint: f.hint}
		}
	}
	if have.Plane == "" && r.spec.Plane != "" {
		return r.recordPlane(ctx, key, kvs[0].ModRevision, have)
	}
	return nil
}

// planeHint tells which config field sets the plane.
const planeHint = `the config's "encryption" picks it: "" for vxlan, "wireguard" for wireguard`

// recordPlane writes this host's plane into a config stored before Spec had one (every
// host of such a network ran the same code, and the first to record decides; a host that
// lost the race compares again).
func (r *Registry) recordPlane(ctx context.Context, key string, rev int64, have Spec) error {
	have.Plane = r.spec.Plane
	data, _ := json.Marshal(have)
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	txn, err := r.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(data))).Commit()
	if err != nil {
		return classify("recording the plane of network "+r.network, err)
	}
	if !txn.Succeeded {
		return r.ensureSpec(ctx)
	}
	return nil
}

// ensureAlive creates the heartbeat when the host has none (no agent has beaten yet).
func (r *Registry) ensureAlive(ctx context.Context, hostID string, ttl time.Duration) error {
	key := r.aliveKey(hostID)
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(cctx, key, clientv3.WithCountOnly())
	if err != nil {
		return classify("reading the heartbeat", err)
	}
	if resp.Count > 0 {
		return nil
	}
	g, err := r.cli.Grant(cctx, ttlSeconds(ttl))
	if err != nil {
		return classify("granting the heartbeat lease", err)
	}
	_, err = r.cli.Txn(cctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(g.ID))).Commit()
	return classify("writing the heartbeat", err)
}

// Package hostnet is the glue the plugin and the agent share between a network config
// (package netconf), a host lease (package lease) and the data plane (package dataplane,
// implemented by vxlan, and by wireguard when the config asks for encryption; masquerade
// by masq): the etcd client and registry of a config,
// the lease request a host makes, the data plane a lease calls for, preparing the host
// (tunnel device, bridge, gateway, ip_forward, masquerade) with a rollback, and removing
// it again. It is the one place that picks the data plane implementation for a config.
//
// What it does not do: hold state or run loops (the agent does), or touch containers.
package hostnet

import (
	"context"
	"errors"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/overlay/dataplane"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/overlay/masq"
	"github.com/moornet/moor/overlay/netconf"
	"github.com/moornet/moor/overlay/vxlan"
	"github.com/moornet/moor/overlay/wireguard"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/etcdclient"
	"github.com/moornet/moor/plugins/firewall"
)

// Client opens the etcd client of c's store (etcdclient.New). dial may be nil.
func Client(c *netconf.Conf, dial func(ctx context.Context, addr string) (net.Conn, error)) (*clientv3.Client, error) {
	cfg := c.Store.Etcd
	cfg.Dial = dial
	return etcdclient.New(cfg)
}

// Spec is what every host of c's network must agree on.
func Spec(c *netconf.Conf) lease.Spec {
	plane := lease.DefaultPlane
	if c.Encrypted() {
		plane = wireguard.PlaneType
	}
	return lease.Spec{Range: c.Range, HostSubnetLen: c.HostSubnetLen, VNI: c.VNI, Port: c.Port, Plane: plane}
}

// Registry is the lease registry of c's network.
func Registry(cli *clientv3.Client, c *netconf.Conf) *lease.Registry {
	return lease.New(cli, lease.Options{Prefix: c.Store.Prefix, Network: c.Name, Spec: Spec(c), Timeout: c.Store.Etcd.RequestTimeout})
}

// vxlanPlane is the version of the VXLAN plane's data in leases.
const vxlanPlane = 1

// Request is the lease claim of host hostID on c's network at underlay u, with what the
// host's data plane publishes. For the WireGuard plane it first checks that the kernel
// has WireGuard (code 104 naming the module, before anything is made) and loads or makes
// the host's key; the returned Undo removes a key this call made, and is never nil.
func Request(c *netconf.Conf, hostID string, u dataplane.Underlay) (lease.Request, Undo, error) {
	req := lease.Request{HostID: hostID, Underlay: u.Addr, TTL: c.TTL, Plane: &lease.PlaneData{Type: lease.DefaultPlane, Version: vxlanPlane}}
	none := func() error { return nil }
	if !c.Encrypted() {
		return req, none, nil
	}
	if err := wireguard.Available(); err != nil {
		return req, none, err
	}
	key, created, err := wireguard.LoadOrCreateKey(c.StateDir, c.Name)
	if err != nil {
		return req, none, err
	}
	undo := none
	if created {
		undo = func() error { return wireguard.RemoveKey(c.StateDir, c.Name) }
	}
	req.Plane = wgDevice(c, key, lease.Lease{}, u).PlaneData()
	return req, undo, nil
}

// RotateKey replaces the host's WireGuard key of c's network (the next Request publishes
// the new public key, the next Plane sets the new private key); an error for a clear
// network.
func RotateKey(c *netconf.Conf) (wireguard.Key, error) {
	if !c.Encrypted() {
		return wireguard.Key{}, plugins.InvalidField("encryption", c.Encryption, "network "+c.Name+" is not encrypted: it has no key to rotate")
	}
	return wireguard.RotateKey(c.StateDir, c.Name)
}

func wgDevice(c *netconf.Conf, key wireguard.Key, l lease.Lease, u dataplane.Underlay) wireguard.Device {
	return wireguard.Device{Name: c.WireGuardDevice, Port: c.WireGuardPort, Key: key, Gateway: l.Gateway(), MTU: c.MTU, Underlay: u}
}

// Plane is the data plane c calls for on host with lease l at underlay u (the WireGuard
// plane reads the host's key, which Request made).
func Plane(c *netconf.Conf, host Host, l lease.Lease, u dataplane.Underlay) (dataplane.Plane, error) {
	if !c.Encrypted() {
		return vxlan.New(host.Handle, vxlan.Device{
			VXLAN: c.VXLANDevice, VNI: c.VNI, Port: c.Port, MAC: l.VTEPMAC,
			Gateway: l.Gateway(), Range: c.Range, MTU: c.MTU, Underlay: u,
		}, c.DirectRouting), nil
	}
	key, err := wireguard.LoadKey(c.StateDir, c.Name)
	if err != nil {
		return nil, err
	}
	return wireguard.New(host.Handle, host.NS, wgDevice(c, key, l, u)), nil
}

// teardownPlane is the plane for Teardown, which needs only the device's name.
func teardownPlane(c *netconf.Conf, host Host) dataplane.Plane {
	if c.Encrypted() {
		return wireguard.New(host.Handle, host.NS, wireguard.Device{Name: c.WireGuardDevice})
	}
	return vxlan.New(host.Handle, vxlan.Device{VXLAN: c.VXLANDevice}, false)
}

// MasqRule is the network's masquerade on this host.
func MasqRule(c *netconf.Conf, l lease.Lease) masq.Rule {
	return masq.Rule{Network: c.Name, HostSubnet: l.Subnet, Range: c.Range, SNAT: c.SNAT}
}

// RepairFirewall puts the network's nftables rules on this host back when someone removed
// or changed them (a flush of the ruleset, a deleted table): the masquerade (ipMasq), the
// icc false rule and the internal rules, each as Prepare installs it. It returns what it
// re-applied; rules in place are not rewritten, so a repair never duplicates one, and
// nothing outside moor-overlay's table is read or touched. The bridge's br_netfilter
// options of icc false are not firewall rules and are left to Prepare.
func RepairFirewall(host Host, c *netconf.Conf, l lease.Lease) ([]string, error) {
	fd := host.nsFd()
	var fixed []string
	var errs []error
	repair := func(what string, present func() (bool, error), ensure func() (bool, error)) {
		ok, err := present()
		if err == nil && !ok {
			if _, err = ensure(); err == nil {
				fixed = append(fixed, what)
			}
		}
		errs = append(errs, err)
	}
	if c.IPMasq {
		r := MasqRule(c, l)
		repair("masquerade", func() (bool, error) { return masq.Present(fd, r) }, func() (bool, error) { return masq.Ensure(fd, r) })
	}
	if c.NoICC() {
		r := NoICCRule(c)
		repair("icc", func() (bool, error) { return masq.PresentNoICC(fd, r) }, func() (bool, error) { return masq.EnsureNoICC(fd, r) })
	}
	if c.Internal {
		r := InternalRule(c)
		repair("internal", func() (bool, error) { return masq.PresentInternal(fd, r) }, func() (bool, error) { return masq.EnsureInternal(fd, r) })
	}
	return fixed, errors.Join(errs...)
}

// Teardown removes the network's tunnel device (its entries go with it) and masquerade;
// the bridge stays for the containers still on it.
func Teardown(host Host, c *netconf.Conf) error {
	return errors.Join(teardownPlane(c, host).Teardown(), masq.Remove(host.nsFd(), c.Name),
		masq.RemoveNoICC(host.nsFd(), c.Name), masq.RemoveInternal(host.nsFd(), c.Name))
}

// Undo removes what Prepare created.
type Undo func() error

// ipForward is the sysctl routing between the bridge and the tunnel needs.
var ipForward = []firewall.Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}

// Host is where the data plane goes: a netlink handle and, when it is not the calling
// thread's namespace, that namespace (for sysctls and nftables).
type Host struct {
	Handle netlinksafe.Handle
	NS     ns.NetNS // nil: the calling thread's namespace
}

// nsFd is the namespace's fd for nftables (0: the calling thread's).
func (h Host) nsFd() int {
	if h.NS == nil {
		return 0
	}
	return int(h.NS.Fd())
}

// Idle reports whether no container is attached to the bridge (or it is gone): what the
// plugin made for the host may then be undone without cutting off another container that
// a concurrent ADD attached meanwhile.
func (h Host) Idle(name string) bool {
	n, err := bridge.Ports(h.Handle, name)
	return err == nil && n == 0
}

// Prepare makes the host ready for the lease: the plane's tunnel device, the bridge (the
// plane's MTU) with the gateway, ip_forward and, with ipMasq, the masquerade (without it,
// any earlier masquerade of the network is removed). The returned Undo removes what this
// call created, unless containers are on the bridge by then (Idle); it is never nil.
func Prepare(host Host, c *netconf.Conf, plane dataplane.Plane, l lease.Lease) (Undo, error) {
	h, nsFd := host.Handle, host.nsFd()
	var undos []func() error
	undo := func() error {
		if !host.Idle(c.Bridge) {
			return nil
		}
		var errs []error
		for i := len(undos) - 1; i >= 0; i-- {
			errs = append(errs, undos[i]())
		}
		return errors.Join(errs...)
	}
	made, err := plane.Ensure()
	if made {
		undos = append(undos, plane.Teardown)
	}
	if err != nil {
		return undo, err
	}
	br, made, err := bridge.Ensure(h, bridge.Spec{Name: c.Bridge, MTU: plane.LinkMTU()})
	if made {
		undos = append(undos, func() error { return plugins.DeleteLinkByName(h, c.Bridge) })
	}
	if err != nil {
		return undo, err
	}
	if err := ensureGateway(h, br, gatewayPrefix(l), c.Range); err != nil {
		return undo, err
	}
	if err := firewall.ApplySysctls(host.NS, ipForward); err != nil {
		return undo, err
	}
	if err := prepareNoICC(host, c, &undos); err != nil {
		return undo, err
	}
	if err := prepareInternal(host, c, &undos); err != nil {
		return undo, err
	}
	if !c.IPMasq {
		return undo, masq.Remove(nsFd, c.Name)
	}
	created, err := masq.Ensure(nsFd, MasqRule(c, l))
	if err != nil {
		return undo, err
	}
	if created {
		undos = append(undos, func() error { return masq.Remove(nsFd, c.Name) })
	}
	return undo, nil
}

// NoICCRule is the network's icc false rule on this host.
func NoICCRule(c *netconf.Conf) masq.NoICC {
	return masq.NoICC{Network: c.Name, Bridge: c.Bridge, Range: c.Range}
}

// prepareNoICC installs the network's icc rule and turns br_netfilter on for the bridge
// (see IsolatePorts), or removes an earlier rule when the network keeps icc.
func prepareNoICC(host Host, c *netconf.Conf, undos *[]func() error) error {
	nsFd := host.nsFd()
	if !c.NoICC() {
		return masq.RemoveNoICC(nsFd, c.Name)
	}
	created, err := masq.EnsureNoICC(nsFd, NoICCRule(c))
	if created {
		*undos = append(*undos, func() error { return masq.RemoveNoICC(nsFd, c.Name) })
	}
	if err != nil {
		return err
	}
	_, unset, err := firewall.NoICCBridge(host.NS, c.Bridge)
	if unset != nil {
		*undos = append(*undos, unset)
	}
	return err
}

// IsolatePorts tells whether the network's container ports must be isolated: icc false
// on a kernel without br_netfilter, where frames switched between two ports of the
// bridge never reach the icc rule (firewall.NoICCBridge).
func IsolatePorts(host Host, c *netconf.Conf) (bool, error) {
	if !c.NoICC() {
		return false, nil
	}
	present, err := firewall.BridgeNetfilterPresent(host.NS)
	return !present, err
}

// InternalRule is the network's internal rule pair on this host.
func InternalRule(c *netconf.Conf) masq.Internal {
	return masq.Internal{Network: c.Name, Bridge: c.Bridge, Range: c.Range}
}

// prepareInternal installs the network's internal rules, or removes earlier ones when the
// network is not internal.
func prepareInternal(host Host, c *netconf.Conf, undos *[]func() error) error {
	nsFd := host.nsFd()
	if !c.Internal {
		return masq.RemoveInternal(nsFd, c.Name)
	}
	created, err := masq.EnsureInternal(nsFd, InternalRule(c))
	if created {
		*undos = append(*undos, func() error { return masq.RemoveInternal(nsFd, c.Name) })
	}
	return err
}

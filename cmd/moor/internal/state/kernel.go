package state

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/cmd/moor/internal/hostns"
	"github.com/moornet/moor/conflist"
	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/link/veth"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/firewall"
)

// AltNamePrefix starts the altname moor-bridge gives an attachment's host veth.
var AltNamePrefix = veth.Bridge.Prefix

// attachmentHash is sha256(network NUL containerID NUL ifname), as moor-bridge computes it.
func attachmentHash(network, containerID, ifName string) [sha256.Size]byte {
	return sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
}

// HostAltName is the altname moor-bridge gives an attachment's host veth.
func HostAltName(network, containerID, ifName string) string {
	return veth.Bridge.AltName(network, containerID, ifName)
}

// EndpointID is an attachment's endpoint ID in `inspect`: the whole attachment hash in hex
// (its first 32 digits are the host veth's altname).
func EndpointID(network, containerID, ifName string) string {
	sum := attachmentHash(network, containerID, ifName)
	return hex.EncodeToString(sum[:])
}

// LinkState is what the kernel says of a network's device (bridge, or macvlan parent).
type LinkState struct {
	Name    string `json:"Name"`
	Present bool   `json:"Present"`
	Up      bool   `json:"Up"`
	Kind    string `json:"Kind,omitempty"` // "bridge", "veth", ... when present
}

// Link reads the state of the link called name in the host.
func Link(h *hostns.Host, name string) (LinkState, error) {
	st := LinkState{Name: name}
	nl, err := h.Netlink()
	if err != nil {
		return st, err
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	if err != nil {
		if plugins.IsNotFound(err) {
			return st, nil
		}
		return st, fmt.Errorf("looking up %s: %w", name, err)
	}
	st.Present = true
	st.Up = l.Attrs().Flags&net.FlagUp != 0
	st.Kind = l.Type()
	return st, nil
}

// Port is a link enslaved to a bridge.
type Port struct {
	Name    string
	AltName string // its moor altname, "" when it has none
	Veth    bool
}

// BridgePorts lists the ports of a bridge (none when the bridge does not exist).
func BridgePorts(h *hostns.Host, bridge string) ([]Port, error) {
	nl, err := h.Netlink()
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	br, err := nl.LinkByName(bridge)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up bridge %s: %w", bridge, err)
	}
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []Port
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex != br.Attrs().Index {
			continue
		}
		p := Port{Name: a.Name}
		_, p.Veth = l.(*netlink.Veth)
		for _, alt := range a.AltNames {
			if strings.HasPrefix(alt, AltNamePrefix) {
				p.AltName = alt
				break
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// KeptError: the bridge was left in place, and why.
type KeptError struct {
	Bridge, Reason string
}

func (e *KeptError) Error() string {
	return fmt.Sprintf("bridge %s left in place: %s", e.Bridge, e.Reason)
}

// RemoveBridge deletes the network's bridge when it is moor's (see the package doc):
// nothing to do when it does not exist, a *KeptError when it is not moor's to delete.
func RemoveBridge(h *hostns.Host, n *conflist.Network, all []*conflist.Network) error {
	name := n.Conf.Bridge
	if n.Driver != conflist.DriverBridge || name == "" {
		return nil
	}
	for _, other := range all {
		if other.Name != n.Name && other.Driver == conflist.DriverBridge && other.Conf.Bridge == name {
			return &KeptError{Bridge: name, Reason: fmt.Sprintf("network %q uses it too", other.Name)}
		}
	}
	nl, err := h.Netlink()
	if err != nil {
		return err
	}
	defer nl.Close()
	link, err := nl.LinkByName(name)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return &KeptError{Bridge: name, Reason: "it is a " + link.Type() + ", not a bridge"}
	}
	ports, err := BridgePorts(h, name)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if p.AltName == "" {
			return &KeptError{Bridge: name, Reason: fmt.Sprintf("port %s is not moor's", p.Name)}
		}
	}
	if err := nl.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
		return fmt.Errorf("deleting bridge %s: %w", name, err)
	}
	return nil
}

// FirewallNetwork describes the network to the firewall exactly as moor-bridge does on
// ADD: its subnets are those of the most recent attachment's addresses, or, with no
// attachment, the first range of each range set and the static addresses.
func FirewallNetwork(n *conflist.Network, atts []store.Attachment) firewall.Network {
	fn := firewall.Network{
		Name: n.Name, Bridge: n.Conf.Bridge, Internal: n.Conf.Internal,
		IPMasq: n.Conf.IPMasq && !n.Conf.Internal, Isolate: n.Conf.Isolated(),
		NoICC: n.Conf.NoICC(), GatewayMode4: n.Conf.GatewayModeIPv4, GatewayMode6: n.Conf.GatewayModeIPv6,
		SNATAddress: net.ParseIP(n.Conf.SNATAddress), SNATAddressIPv6: net.ParseIP(n.Conf.SNATAddressIPv6),
	}
	var prefixes []netip.Prefix
	if latest := latestAttachment(atts); latest != nil {
		prefixes = latest.IPs
	} else if n.IPAM != nil {
		for _, set := range n.IPAM.Ranges {
			prefixes = append(prefixes, set[0].Subnet)
		}
		for _, a := range n.IPAM.Addresses {
			prefixes = append(prefixes, a.Address)
		}
	}
	for _, p := range prefixes {
		p = p.Masked()
		fn.Subnets = append(fn.Subnets, &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return fn
}

func latestAttachment(atts []store.Attachment) *store.Attachment {
	var latest *store.Attachment
	for i := range atts {
		if latest == nil || atts[i].Created.After(latest.Created) {
			latest = &atts[i]
		}
	}
	return latest
}

// Firewalls returns the backend the network's config names, or every backend that works
// here when it names none. The error says why none could be opened.
func Firewalls(h *hostns.Host, n *conflist.Network) ([]firewall.Backend, error) {
	opts := firewall.Options{NetNS: h.NS()}
	if kind := n.Conf.Firewall(); kind != "" {
		b, err := firewall.New(kind, opts)
		if err != nil {
			return nil, err
		}
		return []firewall.Backend{b}, nil
	}
	var out []firewall.Backend
	var errs []error
	for _, kind := range []string{firewall.KindNFTables, firewall.KindIPTables} {
		b, err := firewall.New(kind, opts)
		if err == nil {
			err = b.Status()
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// DetectFirewall returns the backend moor-bridge would use for the network: the one the
// config names, else nftables when it works here, else iptables.
func DetectFirewall(h *hostns.Host, n *conflist.Network) (firewall.Backend, error) {
	return firewall.New(n.Conf.Firewall(), firewall.Options{NetNS: h.NS()})
}

// RemoveFirewall removes the network's rules (see Firewalls for which backends). When the
// config names no backend and none works here, there is nothing to remove.
func RemoveFirewall(h *hostns.Host, n *conflist.Network) error {
	if n.Driver != conflist.DriverBridge {
		return nil
	}
	backends, err := Firewalls(h, n)
	if err != nil {
		if n.Conf.Firewall() == "" {
			return nil // no backend works here, so none holds rules
		}
		return fmt.Errorf("removing the firewall rules of %s: %w", n.Name, err)
	}
	var errs []error
	for _, b := range backends {
		if err := b.RemoveNetwork(n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Package veth is the veth pair of the veth drivers (moor-bridge, moor-overlay): creating
// the pair with its container end made straight inside the container's namespace (no
// create-then-move), an alternative name on the host end that finds it again without the
// container's netns, DEL of an attachment whose netns may be gone, and GC of a bridge's
// stale ports.
//
// The altname prefix of each driver is declared here (Bridge, Overlay), not in the
// drivers: the CLI finds a network's veths by it, and one list keeps two drivers from
// sharing a prefix (a test checks that neither is a prefix of the other).
//
// What it does not do: configure the container's interface (package containerif) or
// create the bridge (package bridge).
package veth

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/link/bridge"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/namehash"
	"github.com/moornet/moor/plugins/sysrand"
)

// hostNameAttempts bounds retries when a random host-side veth name collides.
const hostNameAttempts = 5

// hashLen is how many bytes of the attachment hash go into a veth's altname.
const hashLen = 16

// Options describe a veth pair whose container end is created straight inside the
// container's namespace.
type Options struct {
	HostPrefix    string           // host end is HostPrefix + 8 hex digits; default "veth"
	ContainerName string           // CNI_IFNAME
	ContainerNS   int              // fd of the container's netns
	MTU           int              // both ends; 0 = kernel default
	ContainerMAC  net.HardwareAddr // optional
	HostAltName   string           // optional alternative name of the host end, to find it again without the netns
	Master        netlink.Link     // optional: enslave the host end to this bridge
	Network       string           // the CNI network, named in errors (a full bridge)
	HostUp        bool             // bring the host end up at creation
	// ContainerUp brings the container end up once the host end is named, then the
	// host end (with HostUp). The kernel's IPv6 code answers every state change of a link
	// (an altname, a carrier change that a link lookup makes it process at once) by
	// walking the host's whole IPv6 routing table (rt6_sync_down_dev, rt6_sync_up), whose
	// size grows with the number of attachments. Created down, named while down and
	// brought up last, with its peer already up, the host end cost no such walk in the
	// ADD (perf, 400 attachments; three before): its carrier change is processed by the
	// kernel's link watch in the background, as for a pair made by hand.
	ContainerUp bool
	// BeforeContainerUp, when set with ContainerUp, runs once the container end exists
	// and before it goes up: what must hold before the interface first speaks (moor's
	// drivers turn IPv6 off there on IPv4-only networks, containerif.DisableIPv6). A
	// failure deletes the pair.
	BeforeContainerUp func() error
}

// Create creates the pair from the host's namespace (host) and returns the host end. An
// interface of that name already in the container is code 105.
func Create(host, container netlinksafe.Handle, opts Options) (netlink.Link, error) {
	p, err := CreatePair(host, container, opts)
	return p.Host, err
}

// Pair is a created veth pair: the host end, and the container end when Create looked it
// up anyway (Options.ContainerUp), so that the caller need not look it up again.
type Pair struct {
	Host      netlink.Link
	Container netlink.Link // nil unless Options.ContainerUp
}

// CreatePair is Create, returning the container end too when it has it.
//
// The container's name is not looked up before the creation: a name taken there fails
// the creation with EEXIST, as does a host name taken by chance, and only then is the
// container looked up to tell the two apart (code 105, or another host name). So an ADD
// that succeeds pays no lookup for it.
func CreatePair(host, container netlinksafe.Handle, opts Options) (Pair, error) {
	prefix := opts.HostPrefix
	if prefix == "" {
		prefix = "veth"
	}
	mac := bridge.RandomMAC()
	if opts.HostAltName != "" {
		mac = HostMAC(opts.HostAltName)
	}
	masterIndex := 0
	if opts.Master != nil {
		masterIndex = opts.Master.Attrs().Index
	}
	var lastErr error
	for range hostNameAttempts {
		name := prefix + randomHex(4)
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: name, MTU: opts.MTU, MasterIndex: masterIndex, HardwareAddr: mac},
			PeerName:         opts.ContainerName,
			PeerHardwareAddr: opts.ContainerMAC,
			PeerNamespace:    netlink.NsFd(opts.ContainerNS),
			PeerMTU:          uint32(opts.MTU),
		}
		if opts.HostUp && !opts.ContainerUp {
			veth.Flags = net.FlagUp
		}
		err := host.LinkAdd(veth)
		if errors.Is(err, unix.EEXIST) {
			if _, lerr := container.LinkByName(opts.ContainerName); lerr == nil {
				return Pair{}, codes.New(codes.InterfaceConflict, fmt.Sprintf("interface %q already exists in the container's network namespace", opts.ContainerName))
			}
			lastErr = err
			continue
		}
		if err != nil {
			// The kernel enslaves after creating, in the same request: a failure there
			// unregisters the pair (kernels of the last years do), and this removes what an
			// older one might leave.
			_ = plugins.DeleteLinkByName(host, name)
			err = fmt.Errorf("creating veth %s/%s: %w", name, opts.ContainerName, err)
			if opts.Master != nil {
				err = bridge.PortError(err, opts.Master.Attrs().Name, opts.Network) // a bridge at its MaxPorts
			}
			return Pair{}, err
		}
		p, err := finishPair(host, container, veth, opts)
		if err != nil {
			// The pair is ours: deleting the host end deletes both.
			_ = plugins.DeleteLinkByName(host, name)
			return Pair{}, err
		}
		return p, nil
	}
	return Pair{}, fmt.Errorf("creating veth: no free host name after %d tries: %w", hostNameAttempts, lastErr)
}

// finishPair names and brings up the pair just created as created.
//
// The host end is not looked up again when what its callers read of it is known: LinkAdd
// looked the new link up for its index already (and filled it in), and the name, MTU,
// master and MAC are the ones it was created with. The MAC is chosen by CreatePair for
// that reason, unicast and locally administered as the kernel's would be: derived from
// the altname when there is one (HostMAC: the mark by which DEL recognises a pair whose
// naming a killed ADD did not reach), else random; as one set at creation the kernel
// marks it set, not random, so that udev's MACAddressPolicy leaves it as the result
// reports it. Without a known index or MTU
// (the kernel's default) it is looked up.
func finishPair(host, container netlinksafe.Handle, veth *netlink.Veth, opts Options) (Pair, error) {
	name := veth.Name
	var link netlink.Link = veth
	if veth.Index == 0 || veth.MTU == 0 {
		var err error
		if link, err = host.LinkByName(name); err != nil {
			return Pair{}, fmt.Errorf("looking up new veth %s: %w", name, err)
		}
	}
	p := Pair{Host: link}
	if opts.HostAltName != "" {
		// An altname is found by LinkByName in O(1), unlike an alias.
		if err := host.LinkAddAltName(link, opts.HostAltName); err != nil {
			return Pair{}, fmt.Errorf("naming veth %s %s: %w", name, opts.HostAltName, err)
		}
		if !slices.Contains(link.Attrs().AltNames, opts.HostAltName) {
			link.Attrs().AltNames = append(link.Attrs().AltNames, opts.HostAltName)
		}
	}
	if opts.ContainerUp {
		// Container end first, then the host end, which so comes up with its carrier,
		// and nothing looks it up again (see ContainerUp).
		if opts.BeforeContainerUp != nil {
			if err := opts.BeforeContainerUp(); err != nil {
				return Pair{}, err
			}
		}
		c, err := setUp(container, opts.ContainerName)
		if err != nil {
			return Pair{}, err
		}
		p.Container = c
		if opts.HostUp {
			if err := host.LinkSetUp(link); err != nil {
				return Pair{}, fmt.Errorf("setting %s up: %w", name, err)
			}
			link.Attrs().Flags |= net.FlagUp
		}
	}
	return p, nil
}

// setUp brings the link named name up and returns it, up.
func setUp(h netlinksafe.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return nil, fmt.Errorf("setting %s up: %w", name, err)
	}
	l.Attrs().Flags |= net.FlagUp
	return l, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	sysrand.Read(b)
	return hex.EncodeToString(b)
}

// Namer gives the host end of each attachment an alternative name: Prefix followed by a
// hash of network, container ID and ifname. LinkByName resolves an altname in O(1), so
// DEL finds the host end without the container's netns, and GC recognises the veths of
// attachments that no runtime holds any more.
type Namer struct{ Prefix string }

// The drivers' namers.
var (
	// Bridge names moor-bridge's host veths.
	Bridge = Namer{Prefix: "moor-"}
	// Overlay names moor-overlay's host veths.
	Overlay = Namer{Prefix: "moorov-"}
)

// AltName is the altname of one attachment's host veth.
func (n Namer) AltName(network, containerID, ifName string) string {
	sum := namehash.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return n.Prefix + hex.EncodeToString(sum[:hashLen])
}

// Delete deletes the attachment's veth pair through its host end, found by the altname
// only this attachment's veth carries. It never deletes a link by CNI_IFNAME alone: a DEL
// naming the host's own namespace, or another attachment's container, finds no host end
// with this altname and deletes nothing. Nothing left to delete is success.
//
// One exception, a pair without its altname: an ADD killed between creating the pair and
// naming its host end (separate requests; in moor-bridge the reservation running beside
// them can end the process there) leaves a host end that carries none. When the
// attachment's altname is not found, the container's CNI_IFNAME is deleted if it is a
// veth whose host end has the attachment's own MAC (HostMAC, set in the creating request)
// and no altname of n: a 46-bit mark of this attachment, which another attachment's or
// anyone else's veth does not carry. A netns that is gone has nothing left to delete.
func (n Namer) Delete(call *plugins.Call, network string) error {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer host.Close()
	altName := n.AltName(network, call.ContainerID, call.IfName)
	link, err := host.LinkByName(altName)
	if err != nil {
		if link = n.unnamedPort(host, call, altName); link == nil {
			return nil // nothing left
		}
	}
	if err := host.LinkDel(link); err != nil && !plugins.IsNotFound(err) {
		return fmt.Errorf("deleting host veth %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// HostMAC is the host end's MAC for the attachment with altName: unicast, locally
// administered, the rest from the altname's hash.
func HostMAC(altName string) net.HardwareAddr {
	sum := namehash.Sum256([]byte(altName))
	mac := net.HardwareAddr(sum[:6:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// unnamedPort is the host end of the container's CNI_IFNAME when that is the attachment's
// veth pair left without its altname (see Delete), else nil.
func (n Namer) unnamedPort(host netlinksafe.Handle, call *plugins.Call, altName string) netlink.Link {
	if call.Netns == "" {
		return nil
	}
	cont, nsh, err := plugins.NetlinkAt(call.Netns)
	if err != nil {
		return nil // gone: the pair went with it
	}
	defer nsh.Close()
	defer cont.Close()
	end, err := cont.LinkByName(call.IfName)
	if _, ok := end.(*netlink.Veth); err != nil || !ok {
		return nil
	}
	port, err := host.LinkByIndex(end.Attrs().ParentIndex) // a veth's IFLA_LINK is its peer
	if _, ok := port.(*netlink.Veth); err != nil || !ok {
		return nil
	}
	a := port.Attrs()
	if a.ParentIndex != end.Attrs().Index || !bytes.Equal(a.HardwareAddr, HostMAC(altName)) ||
		slices.ContainsFunc(a.AltNames, func(s string) bool { return strings.HasPrefix(s, n.Prefix) }) {
		return nil
	}
	return port
}

// Tagged reports whether link carries the altname of the attachment (network,
// containerID, ifName): the tag a driver that names no host end (macvlan) puts on the
// container's link, so that DEL deletes only its own link.
func (n Namer) Tagged(link netlink.Link, network, containerID, ifName string) bool {
	return slices.Contains(link.Attrs().AltNames, n.AltName(network, containerID, ifName))
}

// GCPorts deletes the veths on bridge that carry one of n's altnames and belong to no
// attachment in valid. A missing bridge has nothing to collect.
func (n Namer) GCPorts(bridge, network string, valid []types.GCAttachment) error {
	host, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer host.Close()
	br, err := host.LinkByName(bridge)
	if err != nil {
		if plugins.IsNotFound(err) {
			return nil
		}
		return err
	}
	keep := make(map[string]bool, len(valid))
	for _, v := range valid {
		keep[n.AltName(network, v.ContainerID, v.IfName)] = true
	}
	links, err := host.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if _, ok := l.(*netlink.Veth); !ok || a.MasterIndex != br.Attrs().Index || !n.stale(a.AltNames, keep) {
			continue
		}
		if err := host.LinkDel(l); err != nil && !plugins.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting stale veth %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// stale reports whether a port carries one of n's altnames that is not kept.
func (n Namer) stale(altNames []string, keep map[string]bool) bool {
	for _, name := range altNames {
		if strings.HasPrefix(name, n.Prefix) {
			return !keep[name]
		}
	}
	return false
}

// CheckPort finds one attachment's host end for CHECK (nil when missing) and names what
// is wrong with it: missing, or not a port of br.
func (n Namer) CheckPort(h netlinksafe.Handle, br netlink.Link, network, containerID, ifName string) (netlink.Link, []string) {
	port, err := h.LinkByName(n.AltName(network, containerID, ifName))
	if err != nil {
		return nil, []string{"the host end of the veth is missing"}
	}
	if port.Attrs().MasterIndex != br.Attrs().Index {
		return port, []string{fmt.Sprintf("host veth %s is not a port of %s", port.Attrs().Name, br.Attrs().Name)}
	}
	return port, nil
}

package plugins

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// hostVethAttempts bounds retries when a random host-side veth name collides.
const hostVethAttempts = 5

// VethOptions describes a veth pair whose container end is created straight inside the
// container's namespace (no create-then-move).
type VethOptions struct {
	HostPrefix    string           // host end is HostPrefix + 8 hex digits; default "veth"
	ContainerName string           // CNI_IFNAME
	ContainerNS   int              // fd of the container's netns
	MTU           int              // both ends; 0 = kernel default
	ContainerMAC  net.HardwareAddr // optional
	HostAltName   string           // optional alternative name of the host end, to find it again without the netns
	MasterIndex   int              // optional: enslave the host end to this bridge
	HostUp        bool             // bring the host end up at creation
}

// CreateVeth creates the pair from the current (host) namespace and returns the host end.
// An interface of that name already in the container is code 105.
func CreateVeth(host netlinksafe.Handle, container netlinksafe.Handle, opts VethOptions) (netlink.Link, error) {
	if _, err := container.LinkByName(opts.ContainerName); err == nil {
		return nil, codes.New(codes.InterfaceConflict, fmt.Sprintf("interface %q already exists in the container's network namespace", opts.ContainerName))
	}
	prefix := opts.HostPrefix
	if prefix == "" {
		prefix = "veth"
	}
	var lastErr error
	for range hostVethAttempts {
		name := prefix + randomHex(4)
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: name, MTU: opts.MTU, MasterIndex: opts.MasterIndex},
			PeerName:         opts.ContainerName,
			PeerHardwareAddr: opts.ContainerMAC,
			PeerNamespace:    netlink.NsFd(opts.ContainerNS),
			PeerMTU:          uint32(opts.MTU),
		}
		if opts.HostUp {
			veth.Flags = net.FlagUp
		}
		err := host.LinkAdd(veth)
		if err == nil {
			link, err := host.LinkByName(name)
			if err != nil {
				return nil, fmt.Errorf("looking up new veth %s: %w", name, err)
			}
			if opts.HostAltName != "" {
				// An altname is found by LinkByName in O(1), unlike an alias.
				if err := host.LinkAddAltName(link, opts.HostAltName); err != nil {
					_ = host.LinkDel(link)
					return nil, fmt.Errorf("naming veth %s %s: %w", name, opts.HostAltName, err)
				}
			}
			return link, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			// LinkAdd enslaves after creating: a failure there leaves the pair behind.
			_ = DeleteLinkByName(host, name)
			return nil, fmt.Errorf("creating veth %s/%s: %w", name, opts.ContainerName, err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("creating veth: no free host name after %d tries: %w", hostVethAttempts, lastErr)
}

// DeleteLinkByName deletes a link; a link that does not exist is not an error.
func DeleteLinkByName(h netlinksafe.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return nil
		}
		return err
	}
	if err := h.LinkDel(link); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

// IsNotFound reports whether a netlink error means the object does not exist.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// FindLink finds a link by name or, when ref parses as a MAC address, by MAC.
func FindLink(h netlinksafe.Handle, ref string) (netlink.Link, error) {
	if mac, err := net.ParseMAC(ref); err == nil {
		links, err := h.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				return l, nil
			}
		}
		return nil, netlink.LinkNotFoundError{}
	}
	return h.LinkByName(ref)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// What the veth drivers (bridge, overlay) share: a name for each attachment's host end
// that can be found without the container's netns, DEL of a veth whose netns may be gone,
// GC of a bridge's stale ports, and CHECK of the container's interface.

// vethHashLen is how many bytes of the attachment hash go into a veth's altname.
const vethHashLen = 16

// VethNamer gives the host end of each attachment an alternative name: Prefix followed
// by a hash of network, container ID and ifname. LinkByName resolves an altname in O(1),
// so DEL finds the host end without the container's netns, and GC recognises the veths
// of attachments that no runtime holds any more.
type VethNamer struct{ Prefix string }

// BridgeVeths names moor-bridge's veths.
var BridgeVeths = VethNamer{Prefix: "moor-"}

// AltName is the altname of one attachment's host veth.
func (n VethNamer) AltName(network, containerID, ifName string) string {
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	return n.Prefix + hex.EncodeToString(sum[:vethHashLen])
}

// DeleteVeth deletes the call's container interface (which takes the host end with it),
// or, when the netns is gone, empty or lacks it, the host end found by its altname.
// Nothing left to delete is success.
func (n VethNamer) DeleteVeth(call *Call, network string) error {
	if call.Netns != "" {
		cont, nsh, err := NetlinkAt(call.Netns)
		switch {
		case err == nil:
			defer nsh.Close()
			defer cont.Close()
			link, err := cont.LinkByName(call.IfName)
			if err == nil {
				if err := cont.LinkDel(link); err != nil && !IsNotFound(err) {
					return fmt.Errorf("deleting %s in the container: %w", call.IfName, err)
				}
				return nil
			}
			if !IsNotFound(err) {
				return err
			}
		case !errors.Is(err, ErrNetnsGone):
			return err
		}
	}
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	link, err := host.LinkByName(n.AltName(network, call.ContainerID, call.IfName))
	if err != nil {
		return nil // nothing left
	}
	if err := host.LinkDel(link); err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting host veth %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// GCPorts deletes the veths on bridge that carry one of n's altnames and belong to no
// attachment in valid. A missing bridge has nothing to collect.
func (n VethNamer) GCPorts(bridge, network string, valid []types.GCAttachment) error {
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	br, err := host.LinkByName(bridge)
	if err != nil {
		if IsNotFound(err) {
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
		if err := host.LinkDel(l); err != nil && !IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting stale veth %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// stale reports whether a port carries one of n's altnames that is not kept.
func (n VethNamer) stale(altNames []string, keep map[string]bool) bool {
	for _, name := range altNames {
		if strings.HasPrefix(name, n.Prefix) {
			return !keep[name]
		}
	}
	return false
}

// CheckContainerLink compares the container's interface with the cached result and
// returns one line per difference: missing, MAC, down, and (unless linkOnly) addresses
// and routes.
func CheckContainerLink(cont netlinksafe.Handle, ifName string, prev *current.Result, linkOnly bool) []string {
	link, err := cont.LinkByName(ifName)
	if err != nil {
		return []string{fmt.Sprintf("interface %s is missing in the container", ifName)}
	}
	var problems []string
	for _, i := range prev.Interfaces {
		if i.Name == ifName && i.Sandbox != "" && i.Mac != "" && !strings.EqualFold(i.Mac, link.Attrs().HardwareAddr.String()) {
			problems = append(problems, fmt.Sprintf("%s has MAC %s, the result says %s", ifName, link.Attrs().HardwareAddr, i.Mac))
		}
	}
	if linkOnly {
		return problems
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, ifName+" is down")
	}
	addrs, err := cont.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(problems, err.Error())
	}
	have := map[string]bool{}
	for _, a := range addrs {
		have[a.IPNet.String()] = true
	}
	for _, ipc := range prev.IPs {
		if !have[ipc.Address.String()] {
			problems = append(problems, fmt.Sprintf("address %s is missing on %s", ipc.Address.String(), ifName))
		}
	}
	routes, err := cont.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(problems, err.Error())
	}
	for _, want := range prev.Routes {
		found := false
		for _, r := range routes {
			if sameDst(r.Dst, want.Dst) && (want.GW == nil || want.GW.Equal(r.Gw)) {
				found = true
				break
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("route %s via %s is missing", want.Dst.String(), want.GW))
		}
	}
	return problems
}

// sameDst compares a kernel route's destination (nil for a default route on some
// kernels) with a result's.
func sameDst(have *net.IPNet, want net.IPNet) bool {
	if have == nil {
		ones, _ := want.Mask.Size()
		return ones == 0
	}
	return have.String() == want.String()
}

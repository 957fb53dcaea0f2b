package firewall

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// icc false between two ports of one bridge. The rule "no-icc" (nft_rules.go,
// ipt_rules.go) drops what passes the IP forward hook from the bridge back into it
// unless DNATed. Traffic the host routes always passes there; frames the bridge switches
// from port to port pass there only through br_netfilter. NoICCBridge makes sure the
// switched frames are stopped too, one of two ways, chosen when an attachment is added:
//
//   - br_netfilter is in the kernel (its sysctls exist in the netns): the bridge's own
//     nf_call_iptables and nf_call_ip6tables options are turned on, so its switched
//     IPv4 and IPv6 frames pass the IP hooks whatever the host-wide
//     bridge-nf-call-ip(6)tables sysctls say, and "no-icc" drops them. The ports are not
//     isolated: with br_netfilter, a container's connection to a neighbour's published
//     port on a host address is DNATed in br_netfilter's PREROUTING pass and, its new
//     destination lying behind the same bridge, switched straight to the neighbour's
//     port; port isolation would drop it, "no-icc" lets it through (ct status dnat).
//     Non-IP frames (ARP) still pass between ports; they reach no service.
//   - no br_netfilter: the caller isolates every container port of the network
//     (IFLA_BRPORT_ISOLATED: an isolated port forwards only to non-isolated ones, the
//     bridge device included). A DNATed connection to a neighbour is then routed by the
//     host and leaves through the bridge device, which isolation does not concern.
//
// Both fail closed: br_netfilter loaded after a port was isolated leaves the hairpin to a
// neighbour's published port blocked, not direct traffic open. The one way to open it is
// unloading br_netfilter while a network relies on it (it cannot be unloaded where it is
// built into the kernel). A bridge-family nftables rule was not chosen: matching a
// bridged frame's bridge (meta ibrname) and its connection (ct in the bridge family)
// need kernel options (NFT_BRIDGE_META, NF_CONNTRACK_BRIDGE) that kernels built without
// them lack, and without the connection the hairpin cannot be told from direct traffic.

const (
	brNFCallIPTables        = "net/bridge/bridge-nf-call-iptables"
	nlaFNested       uint16 = unix.NLA_F_NESTED
)

// BridgeNetfilterPresent tells whether br_netfilter is in the kernel, seen from netns
// (nil: the calling thread's).
func BridgeNetfilterPresent(netns ns.NetNS) (bool, error) {
	var present bool
	check := func(ns.NetNS) error {
		_, err := os.Stat(filepath.Join(procSys, brNFCallIPTables))
		switch {
		case err == nil:
			present = true
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("firewall: looking for br_netfilter: %w", err)
		}
		return nil
	}
	if netns == nil {
		return present, check(nil)
	}
	return present, netns.Do(check)
}

// NoICCBridge prepares bridge (in netns; nil: the calling thread's) for a network with
// NoICC and tells whether the caller must isolate the network's container ports (see
// above): with br_netfilter it turns the bridge's nf_call_iptables and
// nf_call_ip6tables on and answers false; without, it changes nothing and answers true.
// Idempotent.
func NoICCBridge(netns ns.NetNS, bridge string) (isolatePorts bool, err error) {
	present, err := BridgeNetfilterPresent(netns)
	if err != nil || !present {
		return !present, err
	}
	set := func(ns.NetNS) error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		link, err := h.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("finding bridge %s: %w", bridge, err)
		}
		if link.Type() != "bridge" {
			return invalid("bridge", bridge, "is a "+link.Type()+", not a bridge")
		}
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(link.Attrs().Index)
		req.AddData(msg)
		info := nl.NewRtAttr(unix.IFLA_LINKINFO|int(nlaFNested), nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		data := info.AddRtAttr(nl.IFLA_INFO_DATA|int(nlaFNested), nil)
		data.AddRtAttr(unix.IFLA_BR_NF_CALL_IPTABLES, []byte{1})
		data.AddRtAttr(unix.IFLA_BR_NF_CALL_IP6TABLES, []byte{1})
		req.AddData(info)
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
			return fmt.Errorf("turning br_netfilter on for bridge %s: %w", bridge, err)
		}
		return nil
	}
	if netns == nil {
		return false, set(nil)
	}
	return false, netns.Do(set)
}

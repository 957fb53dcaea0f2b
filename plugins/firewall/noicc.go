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
// undo, nil when nothing changed (both were on already), sets them back to what they
// were, for the rollback of a failed ADD. Idempotent.
func NoICCBridge(netns ns.NetNS, bridge string) (isolatePorts bool, undo func() error, err error) {
	present, err := BridgeNetfilterPresent(netns)
	if err != nil || !present {
		return !present, nil, err
	}
	in := func(fn func() error) error {
		if netns == nil {
			return fn()
		}
		return netns.Do(func(ns.NetNS) error { return fn() })
	}
	var index int
	var before map[uint16]bool
	changed := false
	err = in(func() error {
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
		index = link.Attrs().Index
		before, err = bridgeNFCall(index)
		if err != nil {
			return fmt.Errorf("reading bridge %s: %w", bridge, err)
		}
		if before[unix.IFLA_BR_NF_CALL_IPTABLES] && before[unix.IFLA_BR_NF_CALL_IP6TABLES] {
			return nil
		}
		changed = true
		return setBridgeNFCall(index, bridge, true, true)
	})
	if err != nil || !changed {
		return false, nil, err
	}
	return false, func() error {
		return in(func() error {
			return setBridgeNFCall(index, bridge, before[unix.IFLA_BR_NF_CALL_IPTABLES], before[unix.IFLA_BR_NF_CALL_IP6TABLES])
		})
	}, nil
}

// setBridgeNFCall sets the bridge's nf_call_iptables and nf_call_ip6tables, in the
// calling thread's netns.
func setBridgeNFCall(index int, bridge string, v4, v6 bool) error {
	b := map[bool]byte{false: 0, true: 1}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO|int(nlaFNested), nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA|int(nlaFNested), nil)
	data.AddRtAttr(unix.IFLA_BR_NF_CALL_IPTABLES, []byte{b[v4]})
	data.AddRtAttr(unix.IFLA_BR_NF_CALL_IP6TABLES, []byte{b[v6]})
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("setting nf_call_iptables %v, nf_call_ip6tables %v on bridge %s: %w", v4, v6, bridge, err)
	}
	return nil
}

// CheckNoICCBridge names what NoICCBridge's way leaves missing for bridge and one of its
// container ports (in netns; nil: the calling thread's): with br_netfilter, the bridge's
// nf_call_iptables or nf_call_ip6tables turned off; without, the port not isolated.
func CheckNoICCBridge(netns ns.NetNS, bridge, port string) ([]string, error) {
	present, err := BridgeNetfilterPresent(netns)
	if err != nil {
		return nil, err
	}
	var problems []string
	check := func(ns.NetNS) error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		if !present {
			p, err := h.LinkByName(port)
			if err != nil {
				return fmt.Errorf("finding port %s: %w", port, err)
			}
			info, err := h.LinkGetProtinfo(p)
			if err != nil {
				return fmt.Errorf("reading port %s: %w", port, err)
			}
			if !info.Isolated {
				problems = append(problems, fmt.Sprintf("icc false: bridge port %s is not isolated (no br_netfilter in the kernel)", port))
			}
			return nil
		}
		br, err := h.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("finding bridge %s: %w", bridge, err)
		}
		on, err := bridgeNFCall(br.Attrs().Index)
		if err != nil {
			return fmt.Errorf("reading bridge %s: %w", bridge, err)
		}
		for _, o := range []struct {
			name string
			attr uint16
		}{{"nf_call_iptables", unix.IFLA_BR_NF_CALL_IPTABLES}, {"nf_call_ip6tables", unix.IFLA_BR_NF_CALL_IP6TABLES}} {
			if !on[o.attr] {
				problems = append(problems, fmt.Sprintf("icc false: bridge %s has %s off", bridge, o.name))
			}
		}
		return nil
	}
	if netns == nil {
		err = check(nil)
	} else {
		err = netns.Do(check)
	}
	return problems, err
}

// bridgeNFCall reads the bridge's nf_call options (attribute -> on) from the kernel, in
// the calling thread's netns (the netlink library does not decode them).
func bridgeNFCall(index int) (map[uint16]bool, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, err
	}
	on := map[uint16]bool{}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return nil, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^nlaFNested != unix.IFLA_LINKINFO {
				continue
			}
			info, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return nil, err
			}
			for _, i := range info {
				if i.Attr.Type&^nlaFNested != nl.IFLA_INFO_DATA {
					continue
				}
				data, err := nl.ParseRouteAttr(i.Value)
				if err != nil {
					return nil, err
				}
				for _, d := range data {
					if len(d.Value) > 0 {
						on[d.Attr.Type&^nlaFNested] = d.Value[0] != 0
					}
				}
			}
		}
	}
	return on, nil
}

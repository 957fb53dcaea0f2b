package firewall

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// checkBridgeMove refuses to move network p from bridge old to p.Bridge while old still
// has ports (containers): the firewall would know the network only on the new bridge,
// and the containers left on the old one would lose their isolation. A bridge that is
// gone or empty may be left behind. Only called when a move is seen, never on the hot
// path.
func checkBridgeMove(netNS ns.NetNS, p netPlan, old string) error {
	ports, err := bridgePorts(netNS, old)
	if err != nil {
		return err
	}
	if len(ports) == 0 {
		return nil
	}
	return invalid("bridge", p.Bridge, fmt.Sprintf("network %q is on bridge %q, which still has containers (ports %s); "+
		"a network cannot move to another bridge while containers are attached: remove them first, or keep bridge %q",
		p.Name, old, strings.Join(ports, ", "), old))
}

// bridgePorts lists the names of the links enslaved to bridge in netNS (nil: the calling
// thread's); a missing bridge has none.
func bridgePorts(netNS ns.NetNS, bridge string) ([]string, error) {
	var h netlinksafe.Handle
	var err error
	if netNS == nil {
		h, err = netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlinksafe.NewHandleAt(netns.NsHandle(int(netNS.Fd())), unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink handle: %w", err)
	}
	defer h.Close()
	br, err := h.LinkByName(bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("firewall: find bridge %s: %w", bridge, err)
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("firewall: list links: %w", err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports, nil
}

// checkBridgeOwner refuses a bridge another moor network already uses, and a move of
// the network to another bridge while its old bridge has containers.
func (s *iptSession) checkBridgeOwner(p netPlan) error {
	lines, _, err := s.list(tableFilter, iptIsolation2)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l.label.Rule != ruleIsolateTargetOut {
			continue
		}
		br := argAfter(l.args, "-o")
		switch {
		case l.label.Net != p.Name && br == p.Bridge:
			return invalid("bridge", p.Bridge, fmt.Sprintf("already used by moor network %q", l.label.Net))
		case l.label.Net == p.Name && br != p.Bridge && br != "":
			if err := checkBridgeMove(nil, p, br); err != nil { // already inside the netns
				return err
			}
		}
	}
	return nil
}

func argAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

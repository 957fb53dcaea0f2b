package shim

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/link/containerif"
)

// Check names what is wrong with the network's shim for one attachment: the shim
// missing or down, or a host route to one of ips (the attachment's addresses) via the
// shim with the attachment's mark missing.
func Check(host netlinksafe.Handle, network, containerID, ifName string, ips []net.IP) []string {
	name := Name(network)
	link, err := host.LinkByName(name)
	if err != nil {
		return []string{fmt.Sprintf("host shim %s is missing", name)}
	}
	var problems []string
	if link.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, fmt.Sprintf("host shim %s is down", name))
	}
	routes, err := userRoutes(host, link)
	if err != nil {
		return append(problems, err.Error())
	}
	metric := userMetric(network, containerID, ifName)
	var mine []netlink.Route
	for _, r := range routes {
		if r.Priority == metric {
			mine = append(mine, r)
		}
	}
	for _, ip := range ips {
		if !containerif.HasRoute(mine, *hostAddr(ip).IPNet, nil) {
			problems = append(problems, fmt.Sprintf("host route to %s via shim %s is missing", ip, name))
		}
	}
	return problems
}

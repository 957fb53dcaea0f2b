package containerif

import (
	"fmt"
	"net"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// Check compares the container's interface with the cached result and returns one line
// per difference: missing, MAC, down, and (unless linkOnly) addresses and routes.
func Check(cont netlinksafe.Handle, ifName string, prev *current.Result, linkOnly bool) []string {
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
		if !HasRoute(routes, want.Dst, want.GW) {
			problems = append(problems, fmt.Sprintf("route %s via %s is missing", want.Dst.String(), want.GW))
		}
	}
	return problems
}

// HasRoute reports whether routes hold one to dst (via gw, when gw is set). A kernel
// route without Dst is the default route of its family.
func HasRoute(routes []netlink.Route, dst net.IPNet, gw net.IP) bool {
	for _, r := range routes {
		if sameDst(r, dst) && (gw == nil || gw.Equal(r.Gw)) {
			return true
		}
	}
	return false
}

func sameDst(r netlink.Route, want net.IPNet) bool {
	if r.Dst != nil {
		return r.Dst.String() == want.String()
	}
	ones, _ := want.Mask.Size()
	return ones == 0 && (want.IP.To4() != nil) == (r.Family == netlink.FAMILY_V4)
}

package translate

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/utils"

	"github.com/moornet/moor/netavark/api"
	"github.com/moornet/moor/plugins"
)

// Port numbers and protocols of port_mappings.
const (
	maxPort      = 65535
	protoDefault = "tcp"
)

var protocols = map[string]bool{"tcp": true, "udp": true, "sctp": true}

// MoorAllocates reports whether moor-ipam chooses the addresses of this request: no
// static_ips came with it.
func MoorAllocates(x api.Exec) bool { return len(x.NetworkOptions.StaticIPs) == 0 }

// RuntimeConf builds the libcni call of a setup or teardown request on conf (the
// request's network translated by Build) for the container network namespace netns.
func RuntimeConf(x api.Exec, netns string, conf *Conf) (*libcni.RuntimeConf, error) {
	if netns == "" {
		return nil, invalid("netns path argument", netns, "missing")
	}
	if err := utils.ValidateContainerID(x.ContainerID); err != nil {
		return nil, invalid("container_id", x.ContainerID, err.Details)
	}
	o := x.NetworkOptions
	if err := utils.ValidateInterfaceName(o.InterfaceName); err != nil {
		return nil, invalid("network_options.interface_name", o.InterfaceName, err.Details)
	}
	rt := &libcni.RuntimeConf{
		ContainerID:    x.ContainerID,
		NetNS:          netns,
		IfName:         o.InterfaceName,
		Args:           [][2]string{{"IgnoreUnknown", "1"}},
		CapabilityArgs: map[string]any{},
	}
	if x.ContainerName != "" {
		rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", x.ContainerName})
	}
	if o.StaticMAC != "" {
		mac, err := net.ParseMAC(o.StaticMAC)
		if err != nil || len(mac) != macLen {
			return nil, invalid("network_options.static_mac", o.StaticMAC, "not a 48-bit MAC address")
		}
		rt.Args = append(rt.Args, [2]string{"MAC", mac.String()})
	}
	ips, err := staticIPs(o.StaticIPs, conf.Subnets())
	if err != nil {
		return nil, err
	}
	if len(ips) > 0 {
		rt.CapabilityArgs["ips"] = ips
	}
	// Aliases only mean something to DNS; netavark asks a network without DNS to ignore them.
	if aliases := dedupe(o.Aliases); conf.DNS && len(aliases) > 0 {
		rt.CapabilityArgs["aliases"] = aliases
	}
	ports, err := PortMappings(x.PortMappings)
	if err != nil {
		return nil, err
	}
	if len(ports) > 0 {
		rt.CapabilityArgs["portMappings"] = ports
	}
	return rt, nil
}

// macLen is the length of an Ethernet MAC address.
const macLen = 6

// staticIPs gives each requested address the prefix length of the subnet it lies in.
func staticIPs(ips []string, subnets []netip.Prefix) ([]string, error) {
	var out []string
	for i, s := range ips {
		field := fmt.Sprintf("network_options.static_ips[%d]", i)
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, invalid(field, s, "not an IP address")
		}
		a = a.Unmap()
		found := false
		for _, p := range subnets {
			if p.Contains(a) {
				out = append(out, netip.PrefixFrom(a, p.Bits()).String())
				found = true
				break
			}
		}
		if !found {
			return nil, invalid(field, s, "not in any subnet of the network ("+joinPrefixes(subnets)+")")
		}
	}
	return out, nil
}

// PortMappings expands netavark's port mappings (a range of ports, several protocols
// each) into one CNI entry per port and protocol, in the shape moor-bridge reads.
func PortMappings(pms []api.PortMapping) ([]plugins.PortMapping, error) {
	var out []plugins.PortMapping
	for i, pm := range pms {
		field := fmt.Sprintf("port_mappings[%d]", i)
		n := int(pm.Range)
		if n == 0 {
			n = 1
		}
		if pm.HostPort == 0 {
			return nil, invalid(field+".host_port", "0", "must be a port number (1-65535)")
		}
		if pm.ContainerPort == 0 {
			return nil, invalid(field+".container_port", "0", "must be a port number (1-65535)")
		}
		if int(pm.HostPort)+n-1 > maxPort || int(pm.ContainerPort)+n-1 > maxPort {
			return nil, invalid(field+".range", fmt.Sprint(pm.Range), "the range runs past port 65535")
		}
		hostIP := ""
		if pm.HostIP != "" {
			a, err := netip.ParseAddr(pm.HostIP)
			if err != nil {
				return nil, invalid(field+".host_ip", pm.HostIP, "not an IP address")
			}
			hostIP = a.Unmap().String()
		}
		protos := strings.Split(pm.Protocol, ",")
		if pm.Protocol == "" {
			protos = []string{protoDefault}
		}
		for _, proto := range protos {
			proto = strings.ToLower(strings.TrimSpace(proto))
			if !protocols[proto] {
				return nil, invalid(field+".protocol", pm.Protocol, "each protocol must be tcp, udp or sctp")
			}
			for k := 0; k < n; k++ {
				out = append(out, plugins.PortMapping{HostPort: int(pm.HostPort) + k, ContainerPort: int(pm.ContainerPort) + k, Protocol: proto, HostIP: hostIP})
			}
		}
	}
	return out, nil
}

// dedupe drops repeated aliases (case-insensitively, as DNS compares names).
func dedupe(aliases []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range aliases {
		k := strings.ToLower(a)
		if !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	return out
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

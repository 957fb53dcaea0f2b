package firewall

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// procSys is where sysctls live; a sysctl's Path is relative to it.
const (
	procSys         = "/proc/sys"
	sysctlWriteMode = 0o644 // ignored for existing /proc/sys files; os.WriteFile wants one
)

// Sysctl is one kernel setting, Path relative to /proc/sys with slashes (bridge names
// may contain dots), e.g. "net/ipv4/conf/br0/route_localnet".
type Sysctl struct {
	Path  string
	Value string
}

// RequiredSysctls lists the host-side settings the rules of network n rely on, for the
// caller to apply (ApplySysctls) in the host's netns:
//   - net/ipv4/ip_forward=1 when n has an IPv4 subnet, net/ipv6/conf/all/forwarding=1
//     when it has an IPv6 one (note: IPv6 forwarding makes interfaces with accept_ra=1
//     ignore router advertisements; Docker has the same effect);
//   - net/ipv4/conf/<bridge>/route_localnet=1 when n has an IPv4 subnet, so that ports
//     published on 127.0.0.1 (or with no HostIP) answer from the host's loopback. Both
//     backends drop new connections from moor bridges to 127.0.0.0/8, so containers do
//     not gain access to the host's loopback services through it.
//
// Hairpin mode on a container's bridge port (a container reaching its own published
// port) is also the caller's: it is a link attribute, not a sysctl.
func RequiredSysctls(n Network) []Sysctl {
	p, err := planNetwork(n)
	if err != nil {
		return nil
	}
	var out []Sysctl
	if len(p.subnets[fam4]) > 0 {
		out = append(out,
			Sysctl{Path: "net/ipv4/ip_forward", Value: "1"},
			Sysctl{Path: "net/ipv4/conf/" + n.Bridge + "/route_localnet", Value: "1"})
	}
	if len(p.subnets[fam6]) > 0 {
		out = append(out, Sysctl{Path: "net/ipv6/conf/all/forwarding", Value: "1"})
	}
	return out
}

// ApplySysctls writes the settings inside netns (nil: the calling thread's netns; run it
// on a locked thread then). Values already set are not rewritten.
func ApplySysctls(netns ns.NetNS, sysctls []Sysctl) error {
	apply := func(ns.NetNS) error {
		for _, s := range sysctls {
			if strings.Contains(s.Path, "..") {
				return invalid("sysctl", s.Path, "must not contain ..")
			}
			p := filepath.Join(procSys, s.Path)
			cur, err := os.ReadFile(p)
			if err == nil && strings.TrimSpace(string(cur)) == s.Value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.Value), sysctlWriteMode); err != nil {
				return fmt.Errorf("firewall: set sysctl %s=%s: %w", s.Path, s.Value, err)
			}
		}
		return nil
	}
	if netns == nil {
		return apply(nil)
	}
	return netns.Do(apply)
}

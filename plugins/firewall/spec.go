package firewall

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// family is an IP version, 4 or 6, as written in labels.
type family int

const (
	fam4 family = 4
	fam6 family = 6
)

func (f family) String() string { return strconv.Itoa(int(f)) }

// Limits of the inputs.
const (
	maxIfNameLen = unix.IFNAMSIZ - 1
	minPort      = 1
	maxPort      = 65535
	dnsPort      = 53
)

// MaxPortMappings bounds the port mappings of one attachment (code 7 past it). The
// nftables backend keeps published ports in maps (1,000 mappings: one ADD of about 30 ms
// of CPU; 10,000 about 0.3 s); the iptables backend makes two rules per mapping and
// family in chains that every new connection walks, and its ADD of 1,000 mappings takes
// over a second, so the bound is set for it.
const MaxPortMappings = 1024

// Rule names shared by both backends, so CHECK messages read the same.
const (
	ruleDNAT        = "dnat"         // attachment: published port
	ruleAcceptPort  = "accept-port"  // attachment (iptables): forward to the published port
	ruleMasq        = "masquerade"   // network: + ":" + subnet
	ruleHairpin     = "hairpin"      // network: + ":" + subnet
	ruleLocalnet    = "localnet"     // network: masquerade 127.0.0.0/8 sources DNATed to the bridge
	ruleInternalOut = "internal-out" // network: drop forwarding out of an internal bridge
	ruleInternalIn  = "internal-in"  // network: drop forwarding into an internal bridge
	ruleIsolateOut  = "isolate-out"  // network: drop from this bridge to other moor bridges
	ruleIsolateIn   = "isolate-in"   // network: drop from other moor bridges to this one
	ruleRoutedIn    = "routed-in"    // network: drop new connections routed in that no published port asked for
	ruleDNSGuard    = "dns-guard"    // network (iptables) / base (nftables): no DNAT of port 53 on a gateway
)

const loopbackIP4 = "127.0.0.1"

// Address ranges the rules name.
var (
	loopback4  = mustCIDR("127.0.0.0/8")
	loopback6  = mustCIDR("::1/128")
	multicast4 = mustCIDR("224.0.0.0/4")
	multicast6 = mustCIDR("ff00::/8")
)

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// netPlan is a validated Network with its subnets split by family.
type netPlan struct {
	Network
	subnets  map[family][]*net.IPNet // canonical (masked) prefixes
	gateways map[family][]net.IP     // 4-byte IPv4, 16-byte IPv6
}

func (p netPlan) families() []family {
	var fs []family
	for _, f := range []family{fam4, fam6} {
		if len(p.subnets[f]) > 0 {
			fs = append(fs, f)
		}
	}
	return fs
}

func (p netPlan) label(rule string) label { return label{Net: p.Name, Rule: rule} }

func familyOf(ip net.IP) family {
	if ip.To4() != nil {
		return fam4
	}
	return fam6
}

func planNetwork(n Network) (netPlan, error) {
	p := netPlan{Network: n, subnets: map[family][]*net.IPNet{}}
	if err := checkLabelValue("network name", n.Name); err != nil {
		return p, err
	}
	if err := checkLabelValue("bridge", n.Bridge); err != nil {
		return p, err
	}
	if len(n.Bridge) > maxIfNameLen {
		return p, invalid("bridge", n.Bridge, fmt.Sprintf("longer than %d bytes", maxIfNameLen))
	}
	for i, s := range n.Subnets {
		if s == nil || s.IP == nil || s.Mask == nil {
			return p, invalid(fmt.Sprintf("subnets[%d]", i), "<nil>", "must be a prefix")
		}
		f := familyOf(s.IP)
		ip := s.IP.To4()
		if f == fam6 {
			ip = s.IP.To16()
		}
		ones, bits := s.Mask.Size()
		if bits != len(ip)*8 {
			return p, invalid(fmt.Sprintf("subnets[%d]", i), s.String(), "mask does not match the address family")
		}
		p.subnets[f] = append(p.subnets[f], &net.IPNet{IP: ip.Mask(s.Mask), Mask: net.CIDRMask(ones, bits)})
	}
	p.gateways = map[family][]net.IP{}
	for i, gw := range n.Gateways {
		if gw == nil || gw.IsUnspecified() || gw.IsLoopback() {
			return p, invalid(fmt.Sprintf("gateways[%d]", i), fmt.Sprint(gw), "must be a unicast address")
		}
		f := familyOf(gw)
		if f == fam4 {
			gw = gw.To4()
		}
		p.gateways[f] = append(p.gateways[f], gw)
	}
	longest := label{Net: n.Name, Rule: ruleMasq + ":" + strings.Repeat("f", len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")),
		Sum: contentSum()}
	if len(longest.String()) > maxLabelLen {
		return p, invalid("network name", n.Name, "too long for a rule label")
	}
	return p, p.checkModes()
}

// portRule is one published port in one IP family.
type portRule struct {
	fam           family
	proto         string
	protoNum      uint8
	hostIP        net.IP // nil: every local address of the family
	hostPort      uint16
	containerIP   net.IP
	containerPort uint16
}

func (r portRule) host() string {
	if r.hostIP == nil {
		return "*"
	}
	return r.hostIP.String()
}

func (r portRule) label(k AttachmentKey, rule string) label {
	return label{Net: k.Network, ID: k.ContainerID, If: k.IfName, Rule: rule,
		Fam: r.fam.String(), Proto: r.proto, Host: r.host(), Port: strconv.Itoa(int(r.hostPort))}
}

var protocols = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// planAttachment validates the network and the attachment and expands its ports.
func planAttachment(n Network, a Attachment) (netPlan, []portRule, error) {
	p, err := planNetwork(n)
	if err != nil {
		return p, nil, err
	}
	rules, err := planPorts(p, a)
	return p, rules, err
}

// planPorts validates the attachment and expands its port mappings into one rule per
// family: an empty HostIP publishes on every family the attachment has an address of.
func planPorts(p netPlan, a Attachment) ([]portRule, error) {
	if a.Network != p.Name {
		return nil, invalid("attachment network", a.Network, fmt.Sprintf("does not match network %q", p.Name))
	}
	if err := checkLabelValue("containerID", a.ContainerID); err != nil {
		return nil, err
	}
	if err := checkLabelValue("ifName", a.IfName); err != nil {
		return nil, err
	}
	target := map[family]net.IP{}
	for _, ip := range a.IPs {
		f := familyOf(ip)
		if target[f] == nil && ip != nil {
			target[f] = ip
		}
	}
	if len(a.Ports) > MaxPortMappings {
		return nil, invalid("portMappings", fmt.Sprintf("%d entries", len(a.Ports)),
			fmt.Sprintf("at most %d port mappings per attachment", MaxPortMappings))
	}
	rules := make([]portRule, 0, len(a.Ports))
	for i, pm := range a.Ports {
		expanded, err := expandMapping(fmt.Sprintf("portMappings[%d]", i), pm, target)
		if err != nil {
			return nil, err
		}
		rules = append(rules, expanded...)
		if a.LoopbackToo && pm.HostIP == "" && target[fam4] != nil {
			lo := pm
			lo.HostIP = loopbackIP4
			extra, err := expandMapping(fmt.Sprintf("portMappings[%d]", i), lo, target)
			if err != nil {
				return nil, err
			}
			rules = append(rules, extra...)
		}
	}
	if len(rules) > 0 {
		l := rules[0].label(a.Key(), ruleAcceptPort)
		l.Host, l.Port, l.Proto = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "65535", "sctp"
		l.Sum = contentSum()
		if len(l.String()) > maxLabelLen {
			return nil, invalid("containerID", a.ContainerID, "too long for a rule label")
		}
	}
	idx := portIndex{}
	for _, r := range rules {
		if idx.clashOwn(r.portKey()) {
			return nil, r.inUse(a.Key())
		}
		idx.add(r.portKey(), a.Key())
	}
	return rules, nil
}

func (r portRule) inUse(holder AttachmentKey) *PortInUseError {
	return &PortInUseError{Protocol: r.proto, HostIP: strings.Trim(r.host(), "*"),
		HostPort: int(r.hostPort), Family: int(r.fam), Holder: holder}
}

func expandMapping(field string, pm PortMapping, target map[family]net.IP) ([]portRule, error) {
	proto := strings.ToLower(pm.Protocol)
	if proto == "" {
		proto = "tcp"
	}
	num, ok := protocols[proto]
	if !ok {
		return nil, invalid(field+".protocol", pm.Protocol, "must be tcp, udp or sctp")
	}
	if pm.HostPort < minPort || pm.HostPort > maxPort {
		return nil, invalid(field+".hostPort", strconv.Itoa(pm.HostPort), "must be 1-65535")
	}
	if pm.ContainerPort < minPort || pm.ContainerPort > maxPort {
		return nil, invalid(field+".containerPort", strconv.Itoa(pm.ContainerPort), "must be 1-65535")
	}
	base := portRule{proto: proto, protoNum: num, hostPort: uint16(pm.HostPort), containerPort: uint16(pm.ContainerPort)}
	if pm.HostIP == "" {
		var out []portRule
		for _, f := range []family{fam4, fam6} {
			if target[f] != nil {
				r := base
				r.fam, r.containerIP = f, target[f]
				out = append(out, r)
			}
		}
		if len(out) == 0 {
			return nil, invalid(field, pm.HostIP, "the attachment has no IP address to publish to")
		}
		return out, nil
	}
	hip := net.ParseIP(pm.HostIP)
	if hip == nil {
		return nil, invalid(field+".hostIP", pm.HostIP, "not an IP address")
	}
	r := base
	r.fam = familyOf(hip)
	if r.fam == fam6 && hip.IsLoopback() {
		return nil, invalid(field+".hostIP", pm.HostIP, "IPv6 loopback cannot be published (no route_localnet for IPv6)")
	}
	if target[r.fam] == nil {
		return nil, invalid(field+".hostIP", pm.HostIP, fmt.Sprintf("the attachment has no IPv%d address", r.fam))
	}
	r.containerIP = target[r.fam]
	if !hip.IsUnspecified() {
		r.hostIP = hip
		if r.fam == fam4 {
			r.hostIP = hip.To4()
		}
	}
	return []portRule{r}, nil
}

// portKey is what makes two published ports clash.
type portKey struct {
	fam, proto, host, port string
}

func (r portRule) portKey() portKey {
	return portKey{fam: r.fam.String(), proto: r.proto, host: r.host(), port: strconv.Itoa(int(r.hostPort))}
}

func (l label) portKey() portKey {
	return portKey{fam: l.Fam, proto: l.Proto, host: l.Host, port: l.Port}
}

// portsClash: same family, protocol and port, and the same host address or either one
// on every address ("*": the port is in use on every address of the family, as for
// Docker, although such a mapping is translated on non-loopback addresses only).
func portsClash(a, b portKey) bool {
	return a.fam == b.fam && a.proto == b.proto && a.port == b.port &&
		(a.host == "*" || b.host == "*" || a.host == b.host)
}

// loopbackCompanion: within one attachment, a mapping on a loopback hostIP may sit beside
// the "*" mapping of the same port; it is how a port asks to answer on loopback too.
func loopbackCompanion(a, b portKey) bool {
	return (a.host == "*" && isLoopbackText(b.host)) || (b.host == "*" && isLoopbackText(a.host))
}

func isLoopbackText(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// portIndex finds clashes among many mappings without comparing every pair: per
// (family, protocol, port), who holds "*" and who holds each address.
type portIndex map[portKey]map[string]AttachmentKey // key with host "" -> host -> holder

func (x portIndex) add(k portKey, holder AttachmentKey) {
	svc := portKey{fam: k.fam, proto: k.proto, port: k.port}
	if x[svc] == nil {
		x[svc] = map[string]AttachmentKey{}
	}
	x[svc][k.host] = holder
}

// clash returns a holder of a mapping that clashes with k.
func (x portIndex) clash(k portKey) (AttachmentKey, bool) {
	hosts := x[portKey{fam: k.fam, proto: k.proto, port: k.port}]
	if holder, ok := hosts[k.host]; ok {
		return holder, true
	}
	for host, holder := range hosts {
		if portsClash(k, portKey{fam: k.fam, proto: k.proto, port: k.port, host: host}) {
			return holder, true
		}
	}
	return AttachmentKey{}, false
}

// clashOwn is clash for the mappings of one attachment: a loopback companion of "*" is
// allowed.
func (x portIndex) clashOwn(k portKey) bool {
	hosts := x[portKey{fam: k.fam, proto: k.proto, port: k.port}]
	for host := range hosts {
		o := portKey{fam: k.fam, proto: k.proto, port: k.port, host: host}
		if portsClash(k, o) && !loopbackCompanion(k, o) {
			return true
		}
	}
	return false
}

// checkPortConflicts compares the wanted rules with the DNAT labels found on the host,
// ignoring the attachment's own.
func checkPortConflicts(rules []portRule, self AttachmentKey, existing []label) error {
	idx := portIndex{}
	for _, l := range existing {
		if l.Rule == ruleDNAT && l.key() != self {
			idx.add(l.portKey(), l.key())
		}
	}
	if len(idx) == 0 {
		return nil
	}
	for _, r := range rules {
		if holder, clash := idx.clash(r.portKey()); clash {
			return r.inUse(holder)
		}
	}
	return nil
}

// attachmentKeys returns the distinct attachments of network among labels.
func attachmentKeys(network string, labels []label) []AttachmentKey {
	seen := map[AttachmentKey]bool{}
	var keys []AttachmentKey
	for _, l := range labels {
		k := l.key()
		if !l.isAttachment() || l.Net != network || seen[k] {
			continue
		}
		seen[k] = true
		keys = append(keys, k)
	}
	return keys
}

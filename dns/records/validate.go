package records

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Limits from RFC 1035/1123 and from Linux.
const (
	maxLabelLen   = 63  // one DNS label
	maxNameLen    = 253 // a whole name, in presentation form without the trailing dot
	maxIfNameLen  = 15  // IFNAMSIZ - 1
	maxFileLabel  = 255 // a path component (network name, container ID)
	maxUpstreamNo = 8   // upstream servers kept per network
)

// Bounds on names, so that one attachment or one network cannot make the DNS server's
// index (and the plugin's reads of the store) grow without limit. A record's names are its
// container name, its pod name, its aliases and its short ID: a few in practice. A network
// of 65,536 names indexes in tens of megabytes.
const (
	// MaxNamesPerRecord bounds the names of one attachment.
	MaxNamesPerRecord = 128
	// MaxNamesPerNetwork bounds the names of all attachments of one network.
	MaxNamesPerNetwork = 65536
)

// ValidName reports whether name may be registered: dot-separated RFC 1123 labels of letters,
// digits and inner hyphens, each 1-63 characters, at most 253 in all, no trailing dot. Case is
// accepted (Put lowercases). The error is an *InvalidNameError naming the value.
func ValidName(name string) error {
	return validDNSName("name", name)
}

func validDNSName(field, name string) error {
	bad := func(reason string) error { return &InvalidNameError{Field: field, Value: name, Reason: reason} }
	if name == "" {
		return bad("empty")
	}
	if len(name) > maxNameLen {
		return bad("longer than " + strconv.Itoa(maxNameLen) + " characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return bad("empty label (leading, trailing or double dot)")
		}
		if len(label) > maxLabelLen {
			return bad("label " + strconv.Quote(label) + " longer than " + strconv.Itoa(maxLabelLen) + " characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("label " + strconv.Quote(label) + " starts or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !isLetterDigit(c) && c != '-' && c != '_' {
				return bad("character " + strconv.QuoteRune(rune(c)) + " is not a letter, digit, hyphen or underscore")
			}
		}
	}
	return nil
}

func isLetterDigit(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ValidLabel checks a value used as (part of) a file name or store key: letters, digits,
// '_', '-' and '.', not starting with '.' or '-', at most maxLen bytes, so that it can never
// escape a directory, nest a key or hide as a temp file. field names it in the error.
func ValidLabel(field, v string, maxLen int) error {
	bad := func(reason string) error { return &InvalidNameError{Field: field, Value: v, Reason: reason} }
	if v == "" {
		return bad("empty")
	}
	if len(v) > maxLen {
		return bad("longer than " + strconv.Itoa(maxLen) + " characters")
	}
	if v[0] == '.' || v[0] == '-' {
		return bad("starts with '.' or '-'")
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isLetterDigit(c) && c != '-' && c != '_' && c != '.' {
			return bad("character " + strconv.QuoteRune(rune(c)) + " is not a letter, digit, '-', '_' or '.'")
		}
	}
	return nil
}

// ValidNetworkName reports whether name may name a network (it becomes a directory name).
func ValidNetworkName(name string) error {
	return ValidLabel("network", name, maxFileLabel)
}

// MaxLabel is the longest ValidKey accepts for a network name or container ID.
const MaxLabel = maxFileLabel

// ValidKey checks the identity of a record: network, container ID and interface name.
func ValidKey(network, containerID, ifName string) error {
	if err := ValidNetworkName(network); err != nil {
		return err
	}
	if err := ValidLabel("containerID", containerID, maxFileLabel); err != nil {
		return err
	}
	return ValidLabel("ifName", ifName, maxIfNameLen)
}

// normalizeRecord validates r and returns a copy with lowercased, de-duplicated names and
// de-duplicated addresses (IPv4 in 4-byte form), first occurrence kept.
func normalizeRecord(r Record) (Record, error) {
	if err := ValidKey(r.Network, r.ContainerID, r.IfName); err != nil {
		return Record{}, err
	}
	if len(r.Names) == 0 {
		return Record{}, &InvalidRecordError{Field: "names", Value: "", Reason: "a record needs at least one name"}
	}
	if len(r.Names) > MaxNamesPerRecord {
		return Record{}, &InvalidRecordError{Field: "names", Value: strconv.Itoa(len(r.Names)) + " names",
			Reason: "at most " + strconv.Itoa(MaxNamesPerRecord) + " per attachment"}
	}
	out := Record{Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName}
	seenName := make(map[string]bool, len(r.Names)) // a list search made many aliases quadratic
	for _, n := range r.Names {
		if err := ValidName(n); err != nil {
			return Record{}, err
		}
		n = strings.ToLower(n)
		if !seenName[n] {
			seenName[n] = true
			out.Names = append(out.Names, n)
		}
	}
	if len(r.IPs) == 0 {
		return Record{}, &InvalidRecordError{Field: "ips", Value: "", Reason: "a record needs at least one address"}
	}
	seen := make(map[netip.Addr]bool, len(r.IPs))
	for _, ip := range r.IPs {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || !a.IsValid() || a.Unmap().IsUnspecified() {
			return Record{}, &InvalidRecordError{Field: "ips", Value: ip.String(), Reason: "not a usable IP address"}
		}
		a = a.Unmap()
		if seen[a] {
			continue
		}
		seen[a] = true
		out.IPs = append(out.IPs, net.IP(a.AsSlice()))
	}
	return out, nil
}

// normalizeNetwork validates n and returns a copy with a lowercased domain and canonical
// addresses and subnets.
func normalizeNetwork(n Network) (Network, error) {
	if err := ValidNetworkName(n.Name); err != nil {
		return Network{}, err
	}
	out := Network{Name: n.Name, Internal: n.Internal}
	if n.Domain != "" {
		d := strings.TrimSuffix(n.Domain, ".")
		if err := validDNSName("domain", d); err != nil {
			return Network{}, err
		}
		out.Domain = strings.ToLower(d)
	}
	if len(n.Gateways) == 0 {
		return Network{}, &InvalidRecordError{Field: "gateways", Value: "", Reason: "a network needs at least one gateway address to listen on"}
	}
	for _, gw := range n.Gateways {
		a, ok := netip.AddrFromSlice(gw)
		if !ok || a.Unmap().IsUnspecified() || a.Unmap().IsMulticast() {
			return Network{}, &InvalidRecordError{Field: "gateways", Value: gw.String(), Reason: "not a unicast address"}
		}
		out.Gateways = append(out.Gateways, net.IP(a.Unmap().AsSlice()))
	}
	if len(n.Subnets) == 0 {
		return Network{}, &InvalidRecordError{Field: "subnets", Value: "", Reason: "a network needs at least one client subnet"}
	}
	for _, sn := range n.Subnets {
		if sn == nil {
			return Network{}, &InvalidRecordError{Field: "subnets", Value: "<nil>", Reason: "missing subnet"}
		}
		p, err := prefixOf(sn)
		if err != nil {
			return Network{}, err
		}
		out.Subnets = append(out.Subnets, &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	if len(n.Upstreams) > maxUpstreamNo {
		return Network{}, &InvalidRecordError{Field: "upstreams", Value: strings.Join(n.Upstreams, ","), Reason: "more than " + strconv.Itoa(maxUpstreamNo) + " servers"}
	}
	for _, u := range n.Upstreams {
		hp, err := NormalizeUpstream(u)
		if err != nil {
			return Network{}, err
		}
		out.Upstreams = append(out.Upstreams, hp)
	}
	return out, nil
}

// prefixOf converts a net.IPNet into a masked netip.Prefix (IPv4 in 4-byte form).
func prefixOf(sn *net.IPNet) (netip.Prefix, error) {
	a, ok := netip.AddrFromSlice(sn.IP)
	ones, bits := sn.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, &InvalidRecordError{Field: "subnets", Value: sn.String(), Reason: "not a CIDR"}
	}
	a = a.Unmap()
	if a.Is4() && bits == net.IPv6len*8 {
		ones -= (net.IPv6len - net.IPv4len) * 8
	}
	p, err := a.Prefix(ones)
	if err != nil {
		return netip.Prefix{}, &InvalidRecordError{Field: "subnets", Value: sn.String(), Reason: err.Error()}
	}
	return p, nil
}

// Prefix converts a stored subnet to a netip.Prefix; it is exported for the server's index.
func Prefix(sn *net.IPNet) (netip.Prefix, error) { return prefixOf(sn) }

// dnsPort is the port an upstream without one is asked on.
const dnsPort uint16 = 53

// NormalizeUpstream turns "ip" or "ip:port" ("[v6]:port") into "ip:port" form.
func NormalizeUpstream(u string) (string, error) {
	bad := &InvalidRecordError{Field: "upstreams", Value: u, Reason: "not an IP address or IP:port"}
	if a, err := netip.ParseAddr(u); err == nil {
		if a.Zone() != "" {
			return "", bad
		}
		return netip.AddrPortFrom(a.Unmap(), dnsPort).String(), nil
	}
	ap, err := netip.ParseAddrPort(u)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return "", bad
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
}

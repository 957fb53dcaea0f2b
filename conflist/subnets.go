package conflist

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/ipam/store"
)

// The default IPv4 pool, as Podman's: 10.89.0.0/24, 10.89.1.0/24, ... 10.255.255.0/24.
var (
	poolStart = netip.MustParsePrefix("10.89.0.0/24")
	poolEnd   = netip.MustParseAddr("10.255.255.0")
)

// ulaBits is the prefix length of generated IPv6 subnets; ulaGlobalIDLen the bytes of
// the RFC 4193 global ID taken from the network's name; maxULASubnets bounds the search.
const (
	ulaBits        = 64
	ulaGlobalIDLen = 5
	ulaPrefixByte  = 0xfd
	maxULASubnets  = 1 << 16
)

// Taken is an address space a new network must not overlap, and who holds it.
type Taken struct {
	Prefix netip.Prefix
	Owner  string // e.g. `network "web"`, "host route 10.0.0.0/8 dev eth0"
}

// OverlapError: a subnet overlaps another network or a host route.
type OverlapError struct {
	Subnet netip.Prefix
	With   Taken
}

func (e *OverlapError) Error() string {
	return fmt.Sprintf("subnet %s overlaps %s (%s); choose another --subnet", e.Subnet, e.With.Owner, e.With.Prefix)
}

// ExhaustedError: the default pool has no free subnet left.
type ExhaustedError struct{ Family string }

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("no free %s subnet left in the default pool; give one with --subnet", e.Family)
}

// checkFree returns an *OverlapError when p overlaps anything taken.
func checkFree(p netip.Prefix, taken []Taken) error {
	for _, t := range taken {
		if t.Prefix.Overlaps(p) {
			return &OverlapError{Subnet: p, With: t}
		}
	}
	return nil
}

// nextFreeV4 returns the first /24 of the default pool that overlaps nothing taken.
func nextFreeV4(taken []Taken) (netip.Prefix, error) {
	for p := poolStart; p.Addr().Compare(poolEnd) <= 0; {
		if checkFree(p, taken) == nil {
			return p, nil
		}
		next, ok := nextBlock(p)
		if !ok {
			break
		}
		p = next
	}
	return netip.Prefix{}, &ExhaustedError{Family: "IPv4"}
}

// nextBlock returns the prefix of the same size right after p.
func nextBlock(p netip.Prefix) (netip.Prefix, bool) {
	next := store.LastAddr(p).Next()
	if !next.IsValid() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(next, p.Bits()), true
}

// freeULA returns a unique local /64 for the network: fdXX:XXXX:XXXX:<n>::/64, the global
// ID derived from its name (stable; RFC 4193 wants it random, a hash is as unlikely to
// collide) and n the first subnet ID that overlaps nothing taken.
func freeULA(name string, taken []Taken) (netip.Prefix, error) {
	sum := sha256.Sum256([]byte("moor-ula\x00" + name))
	var b [16]byte
	b[0] = ulaPrefixByte
	copy(b[1:1+ulaGlobalIDLen], sum[:ulaGlobalIDLen])
	const subnetIDByte = 1 + ulaGlobalIDLen
	for id := range maxULASubnets {
		b[subnetIDByte] = byte(id >> 8)
		b[subnetIDByte+1] = byte(id)
		p := netip.PrefixFrom(netip.AddrFrom16(b), ulaBits)
		if checkFree(p, taken) == nil {
			return p, nil
		}
	}
	return netip.Prefix{}, &ExhaustedError{Family: "IPv6"}
}

// RoutesTaken turns the host's routes into Taken spaces: every route of the main table
// except default routes, IPv6 link-local and multicast ones. linkName names a link index.
func RoutesTaken(routes []netlink.Route, linkName func(index int) string) []Taken {
	var out []Taken
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		p := netip.PrefixFrom(a.Unmap(), ones).Masked()
		if a.Is6() && !a.Is4In6() && (a.IsLinkLocalUnicast() || a.IsMulticast()) {
			continue
		}
		owner := "host route " + p.String()
		if dev := linkName(r.LinkIndex); dev != "" {
			owner += " dev " + dev
		}
		out = append(out, Taken{Prefix: p, Owner: owner})
	}
	return out
}

// NetworkTaken names the subnets of another network.
func NetworkTaken(network string, subnets []netip.Prefix) []Taken {
	out := make([]Taken, 0, len(subnets))
	for _, s := range subnets {
		out = append(out, Taken{Prefix: s, Owner: fmt.Sprintf("network %q", network)})
	}
	return out
}

// familyName is "IPv4" or "IPv6".
func familyName(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// join renders prefixes for messages.
func join(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

package plugins_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// LinkAddrs answers what AddrList answers for the link, family by family, among other
// links with addresses of their own: IPv4 and IPv6, several per link, a point-to-point
// peer, none at all.
func TestLinkAddrsMatchesAddrList(t *testing.T) {
	plugintest.RequireRoot(t)
	netns := plugintest.Netns(t, "moor-linkaddrs")
	plugintest.InNetns(t, netns, func(h netlinksafe.Handle) error {
		mk := func(name string, addrs ...string) netlink.Link {
			t.Helper()
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				t.Fatalf("adding %s: %v", name, err)
			}
			l, err := h.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range addrs {
				a, err := netlink.ParseAddr(s)
				if err != nil {
					t.Fatal(err)
				}
				a.Flags = unix.IFA_F_NODAD
				if err := h.AddrAdd(l, a); err != nil {
					t.Fatalf("adding %s to %s: %v", s, name, err)
				}
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			return l
		}
		target := mk("la-target", "10.77.0.1/24", "10.78.0.1/16", "fd77::1/64", "fd78::1/48")
		mk("la-other", "10.77.1.1/24", "fd79::1/64")
		empty := mk("la-empty")
		ptp := mk("la-ptp")
		peer := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 80, 0, 1).To4(), Mask: net.CIDRMask(32, 32)}, Peer: &net.IPNet{IP: net.IPv4(10, 80, 0, 2).To4(), Mask: net.CIDRMask(32, 32)}}
		if err := h.AddrAdd(ptp, peer); err != nil {
			t.Fatal(err)
		}
		for _, l := range []netlink.Link{target, empty, ptp} {
			for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
				got, err := plugins.LinkAddrs(h, l, fam)
				if err != nil {
					t.Fatalf("LinkAddrs(%s, %d): %v", l.Attrs().Name, fam, err)
				}
				want, err := h.AddrList(l, fam)
				if err != nil {
					t.Fatal(err)
				}
				if g, w := addrStrings(got), addrStrings(want); !slices.Equal(g, w) {
					t.Errorf("LinkAddrs(%s, family %d) = %v, AddrList says %v", l.Attrs().Name, fam, g, w)
				}
				// The per-link dump itself, where the kernel has it (5.0 and later; the
				// fallback is AddrList, compared above).
				fd, ok := plugins.HandleRouteFd(h.Handle)
				if !ok {
					t.Fatal("LinkAddrs finds no NETLINK_ROUTE socket in the handle")
				}
				strict, err := plugins.LinkAddrsStrict(fd, l.Attrs().Index, fam)
				if errors.Is(err, plugins.ErrNoStrictDump) {
					t.Logf("kernel without per-link address dumps: %v", err)
					continue
				}
				if err != nil {
					t.Fatalf("per-link dump of %s: %v", l.Attrs().Name, err)
				}
				if g, w := addrStrings(strict), addrStrings(want); !slices.Equal(g, w) {
					t.Errorf("per-link dump of %s, family %d = %v, AddrList says %v", l.Attrs().Name, fam, g, w)
				}
			}
		}
		if got, _ := plugins.LinkAddrs(h, target, netlink.FAMILY_V4); len(got) != 2 {
			t.Errorf("LinkAddrs of la-target, IPv4: %v, want its two addresses", addrStrings(got))
		}
		return nil
	})
}

// addrStrings is each address with its peer, index, scope and flags, sorted.
func addrStrings(addrs []netlink.Addr) []string {
	var out []string
	for _, a := range addrs {
		s := a.IPNet.String()
		if a.Peer != nil {
			s += " peer " + a.Peer.String()
		}
		out = append(out, fmt.Sprintf("%s link %d scope %d flags %#x", s, a.LinkIndex, a.Scope, a.Flags))
	}
	slices.Sort(out)
	return out
}

// LinkAddrs asks h's own socket, so it answers for h's netns also when the calling thread
// is in another one (where a link of the same index has other addresses), and it leaves
// the socket as it found it: strict checking off, the handle's next requests answered.
func TestLinkAddrsOnHandleSocket(t *testing.T) {
	plugintest.RequireRoot(t)
	there := plugintest.Netns(t, "moor-linkaddrs-there")
	here := plugintest.Netns(t, "moor-linkaddrs-here")
	const index = 4242
	mk := func(h netlinksafe.Handle, name, addr string) netlink.Link {
		t.Helper()
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index}}); err != nil {
			t.Fatalf("adding %s: %v", name, err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(addr)
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		return l
	}
	var target netlink.Link
	plugintest.InNetns(t, there, func(h netlinksafe.Handle) error {
		target = mk(h, "la-there", "10.81.0.1/24")
		return nil
	})
	plugintest.InNetns(t, here, func(hereH netlinksafe.Handle) error {
		mk(hereH, "la-here", "10.82.0.1/24") // the same index, in the calling thread's netns
		h, nsh, err := plugins.NetlinkAt(there.Path())
		if err != nil {
			return err
		}
		defer nsh.Close()
		defer h.Close()
		fd, ok := plugins.HandleRouteFd(h.Handle)
		if !ok {
			t.Fatal("LinkAddrs finds no NETLINK_ROUTE socket in the handle: it would fall back to AddrList")
		}
		if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.NETLINK_ROUTE {
			t.Fatalf("the handle's descriptor %d: protocol %d, %v", fd, proto, err)
		}
		got, err := plugins.LinkAddrs(h, target, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if g := addrStrings(got); len(g) != 1 || !strings.HasPrefix(g[0], "10.81.0.1/24 ") {
			t.Errorf("LinkAddrs from another netns = %v, want the handle's netns' 10.81.0.1/24", g)
		}
		if v, err := unix.GetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK); err == nil && v != 0 {
			t.Errorf("strict checking left on (%d) on the handle's socket", v)
		}
		if l, err := h.LinkByName("la-there"); err != nil || l.Attrs().Index != index {
			t.Errorf("the handle's next request: %v, %v", l, err)
		}
		return nil
	})
}

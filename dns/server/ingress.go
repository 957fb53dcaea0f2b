package server

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Ingress check tuning.
const (
	ingressRecheck = 2 * time.Second // how long a verdict about an interface is kept
	ingressMaxKeep = 1024            // verdicts kept before the cache starts afresh
	pktinfoSpace   = 64              // room for one IP_PKTINFO or IPV6_PKTINFO message
)

// ingress decides whether a UDP query that arrived on an interface may be served by the
// socket bound to gw. A container sits behind its network's bridge, which holds the gateway
// address; a packet for that gateway that came in on another interface was routed there,
// from another network or from outside, with a source address it chose: with rp_filter off
// a container of another network can claim any address of this network. Only the interface
// holding gw and the loopback interface (the host itself, e.g. the plugin's WaitAnswer)
// are accepted. TCP needs no such check: a spoofed source cannot complete the handshake.
// The kernel tells the arrival interface per packet (IP_PKTINFO, IPV6_RECVPKTINFO); which
// interfaces hold gw is looked up through the kernel and kept for ingressRecheck, so a
// bridge that is recreated or an address that moves is followed within that time.
type ingress struct {
	gw    netip.Addr
	mu    sync.Mutex
	known map[int]ingressVerdict
}

type ingressVerdict struct {
	ok bool
	at time.Time
}

func newIngress(gw netip.Addr) *ingress {
	return &ingress{gw: gw, known: map[int]ingressVerdict{}}
}

// allowed reports whether a packet that arrived on ifindex at now may be served, and when
// that verdict was reached.
func (g *ingress) allowed(ifindex int, now time.Time) (bool, time.Time) {
	g.mu.Lock()
	v, ok := g.known[ifindex]
	g.mu.Unlock()
	if ok && now.Sub(v.at) < ingressRecheck {
		return v.ok, v.at
	}
	v = ingressVerdict{ok: interfaceAccepts(ifindex, g.gw), at: now}
	g.mu.Lock()
	if len(g.known) >= ingressMaxKeep {
		clear(g.known) // interfaces come and go; never grow without bound
	}
	g.known[ifindex] = v
	g.mu.Unlock()
	return v.ok, v.at
}

// ingressMemo keeps one reader's last verdict, so that a stream of packets from one
// interface takes no lock; it expires with the verdict it copies.
type ingressMemo struct {
	ifindex int
	valid   bool
	v       ingressVerdict
}

func (m *ingressMemo) allowed(g *ingress, ifindex int, now time.Time) bool {
	if m.valid && m.ifindex == ifindex && now.Sub(m.v.at) < ingressRecheck {
		return m.v.ok
	}
	ok, at := g.allowed(ifindex, now)
	*m = ingressMemo{ifindex: ifindex, valid: true, v: ingressVerdict{ok: ok, at: at}}
	return ok
}

// interfaceAccepts reports whether ifindex is the loopback interface or holds gw.
func interfaceAccepts(ifindex int, gw netip.Addr) bool {
	ifi, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return false
	}
	if ifi.Flags&net.FlagLoopback != 0 {
		return true
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == gw {
				return true
			}
		}
	}
	return false
}

// arrivalIfindex returns the interface index carried by an IP_PKTINFO or IPV6_PKTINFO
// control message in oob, or false when there is none.
func arrivalIfindex(oob []byte) (int, bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			return int(int32(binary.NativeEndian.Uint32(data))), true // Inet4Pktinfo.Ifindex
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			const ifindexOff = 16 // Inet6Pktinfo: a 16-byte address, then the index
			return int(binary.NativeEndian.Uint32(data[ifindexOff:])), true
		}
		oob = rest
	}
	return 0, false
}

package plugins

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"reflect"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkAddrs lists the addresses of family (netlink.FAMILY_V4 or FAMILY_V6) on link, in
// h's namespace (whatever the calling thread's).
//
// netlink's AddrList asks the kernel for every address of every link and keeps the
// link's: the kernel walks every link of the namespace, so on a host with a thousand
// container veths each lookup of a bridge's gateway costs a thousand links' walk. This
// asks for the one link's addresses (RTM_GETADDR with ifa_index, which the kernel honours
// on a socket in strict-check mode, Linux 5.0 and later), on h's own NETLINK_ROUTE socket:
// no socket of its own (one socket, bind and close less per call), and the answer is the
// namespace's the socket was opened in, which is h's. Strict checking is turned on for
// the request and off again, so h's other requests see the socket as they made it.
//
// The handle does not export its sockets; handleRouteFd reads the descriptor out of it by
// reflection (read only, no unsafe). When that finds no socket (a package handle, which
// has none, or a netlink release whose handle looks different: TestLinkAddrsOnHandleSocket
// says so), on a kernel without strict checking, or on any failure before the kernel
// answered, it falls back to h.AddrList: the answer is the same, only its cost differs.
// Only IFA_LOCAL/IFA_ADDRESS, the prefix length, flags and scope are decoded: what the
// drivers compare.
func LinkAddrs(h netlinksafe.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	err := errNoStrictDump
	var addrs []netlink.Addr
	if fd, ok := handleRouteFd(h.Handle); ok {
		addrs, err = linkAddrsStrict(fd, link.Attrs().Index, family)
	}
	if errors.Is(err, errNoStrictDump) {
		return h.AddrList(link, family)
	}
	return addrs, err
}

// errNoStrictDump: the kernel cannot filter an address dump by link.
var errNoStrictDump = errors.New("no per-link address dump")

// dumpAttempts bounds the retries of a dump that the kernel marked interrupted (the
// addresses changed while it was read).
const dumpAttempts = 5

// dumpSeq is the first sequence number of a dump: far from the handle's own, which count
// up from 1, so that neither takes the other's answers (the handle skips messages of
// other sequence numbers on its socket, and so does dumpLinkAddrs).
const dumpSeq = 0x6d6f6f72 // "moor"

// handleRouteFd returns the descriptor of h's NETLINK_ROUTE socket (the field path
// Handle.sockets[NETLINK_ROUTE].Socket.fd of vishvananda/netlink), ok false when h has
// none or does not look like that.
func handleRouteFd(h *netlink.Handle) (fd int, ok bool) {
	if h == nil {
		return 0, false
	}
	socks := reflect.ValueOf(h).Elem().FieldByName("sockets")
	if socks.Kind() != reflect.Map || socks.Type().Key().Kind() != reflect.Int {
		return 0, false
	}
	sh := socks.MapIndex(reflect.ValueOf(unix.NETLINK_ROUTE))
	if sh.Kind() != reflect.Pointer || sh.IsNil() || sh.Elem().Kind() != reflect.Struct {
		return 0, false
	}
	sock := sh.Elem().FieldByName("Socket")
	if sock.Kind() != reflect.Pointer || sock.IsNil() || sock.Elem().Kind() != reflect.Struct {
		return 0, false
	}
	v := sock.Elem().FieldByName("fd")
	if !v.CanInt() || v.Int() < 0 {
		return 0, false
	}
	return int(v.Int()), true
}

// linkAddrsStrict runs the per-link dump on fd, a NETLINK_ROUTE socket, with strict
// checking on for its duration.
func linkAddrsStrict(fd, index, family int) ([]netlink.Addr, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		return nil, errNoStrictDump
	}
	defer func() { _ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 0) }()
	for attempt := uint32(0); attempt < dumpAttempts; attempt++ {
		addrs, interrupted, err := dumpLinkAddrs(fd, dumpSeq+attempt, index, family)
		if err != nil || !interrupted {
			return addrs, err
		}
	}
	return nil, fmt.Errorf("listing the addresses of link %d: dump interrupted %d times", index, dumpAttempts)
}

// recvTimeout bounds the wait for each part of the kernel's answer.
const recvTimeout = 5 * time.Second

// recv reads one datagram from fd, which may be non-blocking (a handle's socket is: the
// Go runtime polls it), waiting up to recvTimeout.
func recv(fd int, buf []byte) (int, error) {
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			ready, err := unix.Poll(pfd, int(recvTimeout/time.Millisecond))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return 0, err
			}
			if ready == 0 {
				return 0, unix.ETIMEDOUT
			}
		default:
			return 0, err
		}
	}
}

// dumpLinkAddrs sends one filtered RTM_GETADDR dump with sequence number seq and reads
// its answer.
func dumpLinkAddrs(fd int, seq uint32, index, family int) (addrs []netlink.Addr, interrupted bool, err error) {
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfAddrmsg)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETADDR)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], seq)
	req[unix.NLMSG_HDRLEN] = byte(family)
	binary.NativeEndian.PutUint32(req[unix.NLMSG_HDRLEN+4:], uint32(index))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, false, errNoStrictDump
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := recv(fd, buf)
		if err != nil {
			return nil, false, fmt.Errorf("listing the addresses of link %d: %w", index, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, false, fmt.Errorf("listing the addresses of link %d: %w", index, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue // the rest of an earlier, interrupted attempt
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return addrs, interrupted, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4]))); errno != 0 {
						// EINVAL: a kernel that checks strictly but cannot filter by link.
						return nil, false, errNoStrictDump
					}
				}
				return addrs, interrupted, nil
			case unix.RTM_NEWADDR:
				if a, ok := decodeAddr(m.Data, index, family); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
}

// decodeAddr decodes one RTM_NEWADDR payload; ok is false for another link's or
// family's address (a kernel that did not filter).
func decodeAddr(b []byte, index, family int) (netlink.Addr, bool) {
	var a netlink.Addr
	if len(b) < unix.SizeofIfAddrmsg {
		return a, false
	}
	fam, plen, flags, scope := int(b[0]), int(b[1]), int(b[2]), int(b[3])
	idx := int(binary.NativeEndian.Uint32(b[4:8]))
	if idx != index || fam != family {
		return a, false
	}
	bits := 8 * net.IPv4len
	if fam == unix.AF_INET6 {
		bits = 8 * net.IPv6len
	}
	var local, address net.IP
	attrs, err := syscall.ParseNetlinkRouteAttr(&syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWADDR}, Data: b})
	if err != nil {
		return a, false
	}
	for _, at := range attrs {
		switch at.Attr.Type {
		case unix.IFA_LOCAL:
			local = net.IP(append([]byte(nil), at.Value...))
		case unix.IFA_ADDRESS:
			address = net.IP(append([]byte(nil), at.Value...))
		case unix.IFA_FLAGS:
			if len(at.Value) >= 4 {
				flags = int(binary.NativeEndian.Uint32(at.Value))
			}
		}
	}
	ip := local // IPv4: the link's own address; IFA_ADDRESS is the peer's on a point-to-point link
	if ip == nil {
		ip = address // IPv6 sends IFA_ADDRESS alone
	}
	if ip == nil {
		return a, false
	}
	a.IPNet = &net.IPNet{IP: ip, Mask: net.CIDRMask(plen, bits)}
	a.LinkIndex, a.Flags, a.Scope = idx, flags, scope
	if local != nil && address != nil && !local.Equal(address) {
		a.Peer = &net.IPNet{IP: address, Mask: net.CIDRMask(plen, bits)}
	}
	return a, true
}

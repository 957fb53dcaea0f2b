package plugins

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// IPv4ConfARPNotify is the IPV4_DEVCONF id of arp_notify (linux/ip.h), which
// golang.org/x/sys does not define.
const IPv4ConfARPNotify = 22

// devconfSeq is SetIPv4Conf's sequence number: far from the handle's own, which count up
// from 1, and from LinkAddrs' (dumpSeq), so that no request takes another's answer.
const devconfSeq = dumpSeq - 0x100

// SetIPv4Conf sets one IPv4 per-link setting (what /proc/sys/net/ipv4/conf/<link>/<name>
// holds; id is its IPV4_DEVCONF number) of the link with index in h's namespace, with one
// RTM_SETLINK request (IFLA_AF_SPEC, AF_INET, IFLA_INET_CONF) on h's own NETLINK_ROUTE
// socket: no /proc/sys path to open, whose every component is looked up along a dentry
// hash chain that grows with each network namespace holding a link of the same name (a
// few hundred namespaces with an eth0 make one such open cost about 0.3 ms), and no visit
// to the namespace. sent is false when h's socket could not be found or written to:
// nothing reached the kernel and the caller writes the /proc/sys file instead (see
// LinkAddrs for how the socket is found). The kernel applies IFLA_AF_SPEC after the
// link's flags, so a setting that must precede the link going up needs its own request
// before that, as here.
func SetIPv4Conf(h netlinksafe.Handle, index, id int, value uint32) (sent bool, err error) {
	fd, ok := handleRouteFd(h.Handle)
	if !ok {
		return false, nil
	}
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.Seq = devconfSeq
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil).AddRtAttr(id, nl.Uint32Attr(value))
	req.AddData(spec)
	if err := unix.Sendto(fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, nil
	}
	buf := make([]byte, 4096)
	for {
		n, err := recv(fd, buf)
		if err != nil {
			return true, fmt.Errorf("setting IPv4 conf %d of link %d: %w", id, index, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return true, fmt.Errorf("setting IPv4 conf %d of link %d: %w", id, index, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Type != unix.NLMSG_ERROR {
				continue // not this request's answer
			}
			if len(m.Data) >= 4 {
				if errno := syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4]))); errno != 0 {
					return true, fmt.Errorf("setting IPv4 conf %d of link %d: %w", id, index, errno)
				}
			}
			return true, nil
		}
	}
}

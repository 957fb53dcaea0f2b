package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Host sockets: a published port must not take over a port that a process of the host
// already listens on. The check asks the host namespace's sock_diag (netlink) for
// listening TCP sockets and unconnected UDP sockets, of the protocols and families the
// mappings use only: the kernel filters by state, and for TCP it walks only the
// listening hash, so the check costs well under a millisecond also on a host with many
// connections (reading /proc/net/tcp walks every socket of every namespace, tens of
// milliseconds on a busy host). It runs once per ADD that has port mappings, under the
// host lock. SCTP sockets are not checked (SCTP publishing is rare). Who holds a
// socket is looked up in /proc/<pid>/fd only when a conflict is found; a socket the
// calling runtime holds itself (EnvPortReservers) is its reservation, not a conflict.

// HostSocket is a listening socket of the host that holds a port.
type HostSocket struct {
	Proto string // tcp or udp
	Addr  net.IP // the bound address; unspecified for every address
	Port  int
	Inode uint64
	PID   int    // 0 when no process was found (e.g. a kernel socket)
	Comm  string // the process's name
}

func (s *HostSocket) String() string {
	who := "no process found"
	if s.PID != 0 {
		who = fmt.Sprintf("pid %d (%s)", s.PID, s.Comm)
	}
	return fmt.Sprintf("%s socket on %s held by %s", s.Proto, net.JoinHostPort(s.Addr.String(), strconv.Itoa(s.Port)), who)
}

// inet_diag request and reply layout (linux/inet_diag.h).
const (
	tcpListenState   = 10 // TCP_LISTEN
	udpUnconnected   = 7  // TCP_CLOSE: a bound UDP socket with no peer
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen   = 72 // struct inet_diag_msg
	diagSportOffset  = 4
	diagSrcOffset    = 8
	diagInodeOffset  = 68
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
)

// checkHostSockets refuses rules whose host port a socket of the host holds, unless one
// of reservers (Options.PortReservers) holds it.
func checkHostSockets(netNS ns.NetNS, rules []portRule, reservers []int) error {
	if len(rules) == 0 {
		return nil
	}
	protos := map[string]bool{}
	for _, r := range rules {
		protos[r.proto] = true
	}
	socks, err := listeningSockets(netNS, protos)
	if err != nil {
		return &BackendError{Backend: "host", Op: "read listening sockets", Err: err}
	}
	if len(socks) == 0 {
		return nil
	}
	type svc struct {
		proto string
		port  int
	}
	byPort := map[svc][]*HostSocket{}
	for i := range socks {
		s := &socks[i]
		byPort[svc{s.Proto, s.Port}] = append(byPort[svc{s.Proto, s.Port}], s)
	}
	reserved := map[int]bool{}
	for _, pid := range reservers {
		reserved[pid] = true
	}
	for _, r := range rules {
		for _, s := range byPort[svc{r.proto, int(r.hostPort)}] {
			if socketHolds(s, r) {
				var mine bool
				s.PID, s.Comm, mine = socketOwner(s.Inode, reserved)
				if mine {
					continue
				}
				e := r.inUse(AttachmentKey{})
				e.Socket = s
				return e
			}
		}
	}
	return nil
}

// socketHolds tells whether a packet the rule translates could be meant for the socket.
// A socket on the IPv6 wildcard may be dual-stack, so it holds the IPv4 port too.
func socketHolds(s *HostSocket, r portRule) bool {
	v4 := s.Addr.To4() != nil
	switch {
	case s.Addr.IsUnspecified() && v4:
		return r.fam == fam4
	case s.Addr.IsUnspecified():
		return true
	case (r.fam == fam4) != v4:
		return false
	case r.hostIP == nil:
		return true
	}
	return r.hostIP.Equal(s.Addr)
}

// listeningSockets dumps, through sock_diag in netNS (nil: the calling thread's), the
// listening TCP and unconnected UDP sockets of the given protocols, IPv4 and IPv6.
func listeningSockets(netNS ns.NetNS, protos map[string]bool) ([]HostSocket, error) {
	cfg := &netlink.Config{}
	if netNS != nil {
		cfg.NetNS = int(netNS.Fd())
	}
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []HostSocket
	for _, q := range []struct {
		proto string
		num   uint8
		state uint
	}{{"tcp", unix.IPPROTO_TCP, tcpListenState}, {"udp", unix.IPPROTO_UDP, udpUnconnected}} {
		if !protos[q.proto] {
			continue
		}
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			req := make([]byte, inetDiagReqLen)
			req[0], req[1] = fam, q.num
			binary.NativeEndian.PutUint32(req[4:], 1<<q.state)
			msgs, err := c.Execute(netlink.Message{
				Header: netlink.Header{Type: sockDiagByFamily, Flags: netlink.Request | netlink.Dump},
				Data:   req,
			})
			if err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue // no IPv6, or no UDP diag module
				}
				return nil, fmt.Errorf("sock_diag %s/%d: %w", q.proto, fam, err)
			}
			for _, m := range msgs {
				if s, ok := parseDiagMsg(q.proto, m.Data); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out, nil
}

func parseDiagMsg(proto string, b []byte) (HostSocket, bool) {
	if len(b) < inetDiagMsgLen {
		return HostSocket{}, false
	}
	ip := net.IP(append([]byte(nil), b[diagSrcOffset:diagSrcOffset+net.IPv6len]...))
	if b[0] == unix.AF_INET {
		ip = ip[:net.IPv4len]
	} else if v4 := ip.To4(); v4 != nil && !ip.Equal(net.IPv6unspecified) {
		ip = v4 // an IPv4-mapped address of an IPv6 socket
	}
	return HostSocket{
		Proto: proto,
		Addr:  ip,
		Port:  int(binary.BigEndian.Uint16(b[diagSportOffset:])),
		Inode: uint64(binary.NativeEndian.Uint32(b[diagInodeOffset:])),
	}, true
}

// socketOwner finds the process holding the socket inode (the first one found, for the
// error message), and reports whether any of its holders is one of reservers.
func socketOwner(inode uint64, reservers map[int]bool) (pid int, comm string, reserved bool) {
	want := fmt.Sprintf("socket:[%d]", inode)
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && link == want {
				p, _ := strconv.Atoi(filepath.Base(dir))
				if reservers[p] {
					return p, "", true
				}
				if pid == 0 {
					c, _ := os.ReadFile(filepath.Join(dir, "comm"))
					pid, comm = p, strings.TrimSpace(string(c))
				}
				break
			}
		}
	}
	return pid, comm, false
}

// EnvPortReservers names, in the environment of a plugin, the processes (PIDs, separated
// by commas) of the runtime that called it, for Options.PortReservers. Podman 5 binds
// every port it publishes before it calls netavark (and hands the sockets to conmon), so
// moor-netavark names podman's processes here; nothing else sets it.
const EnvPortReservers = "MOOR_PORT_RESERVERS"

// PortReserversFromEnv parses EnvPortReservers with getenv; what is not a PID is ignored.
func PortReserversFromEnv(getenv func(string) string) []int {
	var out []int
	for _, f := range strings.Split(getenv(EnvPortReservers), ",") {
		if pid, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

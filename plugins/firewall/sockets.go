package firewall

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Host sockets: a published port must not take over a port that a process of the host
// already listens on. The check reads the host namespace's socket tables in
// /proc/thread-self/net (tcp, tcp6, udp, udp6: only those of the protocols the mappings
// use), once per ADD that has port mappings, under the host lock. A TCP socket counts
// when it listens; a UDP socket when it is bound and not connected. SCTP sockets are not
// checked (the kernel lists them elsewhere, and SCTP publishing is rare). Who holds the
// socket is looked up in /proc/<pid>/fd only when a conflict is found.

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

const (
	procNetDir     = "/proc/thread-self/net"
	tcpStateListen = "0A"
)

// checkHostSockets refuses rules whose host port a socket of the host holds.
func checkHostSockets(netNS ns.NetNS, rules []portRule) error {
	if len(rules) == 0 {
		return nil
	}
	protos := map[string]bool{}
	for _, r := range rules {
		protos[r.proto] = true
	}
	var socks []HostSocket
	read := func(ns.NetNS) error {
		for _, proto := range []string{"tcp", "udp"} {
			if !protos[proto] {
				continue
			}
			for _, file := range []string{proto, proto + "6"} {
				s, err := readSocketTable(filepath.Join(procNetDir, file), proto)
				if err != nil {
					return err
				}
				socks = append(socks, s...)
			}
		}
		return nil
	}
	var err error
	if netNS == nil {
		err = read(nil)
	} else {
		err = netNS.Do(read)
	}
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
	for _, r := range rules {
		for _, s := range byPort[svc{r.proto, int(r.hostPort)}] {
			if socketHolds(s, r) {
				s.PID, s.Comm = socketOwner(s.Inode)
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

// readSocketTable parses one /proc/net socket table, keeping listening TCP sockets and
// unconnected UDP sockets.
func readSocketTable(path, proto string) ([]HostSocket, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil // no IPv6 in this kernel
	}
	if err != nil {
		return nil, err
	}
	var out []HostSocket
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		local, remote, state := f[1], f[2], f[3]
		if proto == "tcp" && state != tcpStateListen {
			continue
		}
		if proto == "udp" && !strings.HasSuffix(remote, ":0000") {
			continue // connected
		}
		ip, port, ok := parseProcAddr(local)
		if !ok {
			continue
		}
		inode, _ := strconv.ParseUint(f[9], 10, 64)
		out = append(out, HostSocket{Proto: proto, Addr: ip, Port: port, Inode: inode})
	}
	return out, sc.Err()
}

// parseProcAddr reads "0100007F:270F": the address as 32-bit words printed in host byte
// order, the port in hex.
func parseProcAddr(s string) (net.IP, int, bool) {
	a, p, found := strings.Cut(s, ":")
	if !found {
		return nil, 0, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != net.IPv4len && len(raw) != net.IPv6len) {
		return nil, 0, false
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, 0, false
	}
	if v4 := ip.To4(); v4 != nil && len(ip) == net.IPv6len && !ip.Equal(net.IPv6unspecified) {
		ip = v4 // an IPv4-mapped address of a tcp6 socket
	}
	return ip, int(port), true
}

// socketOwner finds the process holding the socket inode (the first one found), for the
// error message only.
func socketOwner(inode uint64) (int, string) {
	want := fmt.Sprintf("socket:[%d]", inode)
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && link == want {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
				return pid, strings.TrimSpace(string(comm))
			}
		}
	}
	return 0, ""
}

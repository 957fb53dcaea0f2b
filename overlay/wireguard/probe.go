package wireguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/overlay/dataplane"
)

// probeWait is how long a probe waits for each echo reply (a deadline, not a measurement).
const probeWait = 2 * time.Second

// Check is the result of probing one peer (Plane.Check).
type Check struct {
	// Reachable: an echo of some size was answered through the tunnel.
	Reachable bool
	// FullSize: an echo of the full link MTU with "do not fragment" was answered.
	FullSize bool
	// MTU is the link MTU the full-size echo tried.
	MTU int
	// Problem names the peer and the cause when FullSize is false.
	Problem string
}

// Probe checks the path to each peer through the tunnel (Check) and returns one sentence
// per peer that does not answer in full (nil when every peer does).
func (pl *Plane) Probe(peers []dataplane.Peer) ([]string, error) {
	var problems []string
	for _, p := range peers {
		c, err := pl.Check(p)
		if err != nil {
			return nil, err
		}
		if c.Problem != "" {
			problems = append(problems, c.Problem)
		}
	}
	return problems, nil
}

// Check probes the path to p: an ICMP echo of the full link MTU with "do not fragment"
// from the host's gateway to the peer's gateway, and, when that gets no answer, a small
// one and the peer's handshake, to name the cause.
func (pl *Plane) Check(p dataplane.Peer) (Check, error) {
	c := Check{MTU: pl.d.LinkMTU()}
	if echo(pl, p.Gateway, c.MTU-28) == nil { // IPv4 and ICMP headers
		c.Reachable, c.FullSize = true, true
		return c, nil
	}
	if err := echo(pl, p.Gateway, 56); err == nil {
		c.Reachable = true
		c.Problem = fmt.Sprintf("host %s: packets of %d bytes do not cross to %s (small ones do): the underlay's path MTU towards %s is below its MTU %d; set the network's mtu lower",
			p.HostID, c.MTU, p.Gateway, p.Underlay, pl.d.Underlay.MTU)
		return c, nil
	}
	st, err := pl.Sessions([]dataplane.Peer{p})
	switch {
	case err != nil:
		return c, err
	case !st[0].Present:
		c.Problem = fmt.Sprintf("host %s: no WireGuard peer on %s (the agent has not applied its lease)", p.HostID, pl.d.Name)
	case st[0].LastHandshake.IsZero() || time.Since(st[0].LastHandshake) > 3*time.Minute:
		c.Problem = fmt.Sprintf("host %s: no WireGuard handshake with %s: its UDP port is unreachable (a firewall on the way) or the public key in its lease is not its key",
			p.HostID, pl.endpoint(p))
	default:
		c.Problem = fmt.Sprintf("host %s: handshake done but %s does not answer: its gateway or forwarding is down", p.HostID, p.Gateway)
	}
	return c, nil
}

// echo sends one ICMP echo request of size payload bytes, DF set, from the plane's gateway
// to dst in the plane's namespace, and waits for its reply.
func echo(pl *Plane, dst netip.Addr, size int) error {
	return inNS(pl.netns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("icmp socket: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: pl.d.Gateway.As4()}); err != nil {
			return fmt.Errorf("binding to %s: %w", pl.d.Gateway, err)
		}
		tv := unix.NsecToTimeval(int64(probeWait))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		id := uint16(os.Getpid())
		seq := uint16(time.Now().UnixNano())
		msg := make([]byte, 8+size)
		msg[0] = 8 // echo request
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
			return fmt.Errorf("sending %d bytes to %s: %w", len(msg)+20, dst, err)
		}
		deadline := time.Now().Add(probeWait)
		buf := make([]byte, 65536)
		for time.Now().Before(deadline) {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				return err
			}
			sa, ok := from.(*unix.SockaddrInet4)
			if !ok || netip.AddrFrom4(sa.Addr) != dst || n < 20 {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			r := buf[ihl:n]
			if len(r) >= 8 && r[0] == 0 && binary.BigEndian.Uint16(r[4:]) == id && binary.BigEndian.Uint16(r[6:]) == seq {
				return nil
			}
		}
		return fmt.Errorf("no echo reply of %d bytes from %s within %s", size, dst, probeWait)
	})
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

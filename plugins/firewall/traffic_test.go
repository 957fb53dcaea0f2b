package firewall

import (
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Bounds for traffic checks. They are not timing assertions: reachable peers answer in
// milliseconds; unreachable ones (dropped packets) need some bound to give up.
const (
	reachTimeout   = 5 * time.Second
	blockedTimeout = 1 * time.Second
	udpBufSize     = 128
	whoamiPort     = 80
	outsidePort    = 9000
)

// serveReplies listens on addr (tcp and udp) inside n and answers every connection or
// datagram with reply(remote address).
func serveReplies(t *testing.T, n ns.NetNS, addr string, reply func(net.Addr) string) {
	t.Helper()
	var tl net.Listener
	var ul net.PacketConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		if tl, err = net.Listen("tcp", addr); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp", addr)
		return err
	})
	must(t, "listen "+addr, err)
	t.Cleanup(func() { _ = tl.Close(); _ = ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(reply(c.RemoteAddr())))
			_ = c.Close()
		}
	}()
	go func() {
		buf := make([]byte, udpBufSize)
		for {
			_, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = ul.WriteTo([]byte(reply(from)), from)
		}
	}()
}

// serveWhoami listens on [::]:port (tcp and udp, dual stack) inside n and answers every
// connection or datagram with the remote address it saw.
func serveWhoami(t *testing.T, n ns.NetNS, port int) {
	t.Helper()
	serveReplies(t, n, net.JoinHostPort("::", strconv.Itoa(port)), func(a net.Addr) string { return a.String() })
}

// ask connects from n to addr (sending one datagram over udp) and returns the answer.
func ask(n ns.NetNS, network, addr string, timeout time.Duration) (string, error) {
	var got string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if network == "udp" {
			if _, err := c.Write([]byte("?")); err != nil {
				return err
			}
			buf := make([]byte, udpBufSize)
			m, err := c.Read(buf)
			got = string(buf[:m])
			return err
		}
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// whoami connects from n to addr and returns the IP the server saw us as.
func whoami(n ns.NetNS, network, addr string, timeout time.Duration) (net.IP, error) {
	seen, err := ask(n, network, addr, timeout)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(seen)
	if err != nil {
		return nil, err
	}
	return net.ParseIP(host), nil
}

func hostPort(ip net.IP, port int) string { return net.JoinHostPort(ip.String(), strconv.Itoa(port)) }

// expectSeenAs asserts that a connection from n to addr works and that the server saw
// the source want.
func expectSeenAs(t *testing.T, what string, n ns.NetNS, network, addr string, want net.IP) {
	t.Helper()
	got, err := whoami(n, network, addr, reachTimeout)
	if err != nil {
		t.Fatalf("%s: %s %s: %v", what, network, addr, err)
	}
	if !got.Equal(want) {
		t.Fatalf("%s: %s %s: server saw %s, want %s", what, network, addr, got, want)
	}
}

// expectBlocked asserts that a TCP connection from n to addr fails.
func expectBlocked(t *testing.T, what string, n ns.NetNS, addr string) {
	t.Helper()
	if got, err := whoami(n, "tcp", addr, blockedTimeout); err == nil {
		t.Fatalf("%s: tcp %s reached the server (seen as %s), want blocked", what, addr, got)
	}
}

// expectRefused asserts that nothing is published at addr: the host itself answers with
// a reset (no DNAT happened, and no host socket listens there).
func expectRefused(t *testing.T, what string, n ns.NetNS, addr string) {
	t.Helper()
	_, err := whoami(n, "tcp", addr, reachTimeout)
	if err == nil || !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("%s: tcp %s: got %v, want connection refused", what, addr, err)
	}
}

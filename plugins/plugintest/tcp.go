package plugintest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ServeTCP listens on addr inside netns and answers every connection with one line: the
// remote address it saw. The socket lives in netns; it is closed when the test ends.
func ServeTCP(t testing.TB, netns ns.NetNS, addr string) { ServeTCPOn(t, netns, "tcp", addr) }

// ServeTCPOn is ServeTCP on network "tcp", "tcp4" or "tcp6". A "tcp" listener on [::] is
// IPv4-only when the process's first netns had no IPv6 (Go decides once): IPv6 servers
// want "tcp6".
func ServeTCPOn(t testing.TB, netns ns.NetNS, network, addr string) {
	t.Helper()
	var l net.Listener
	err := netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			c.Close()
		}
	}()
}

// DialTCP connects from netns to addr (a ServeTCP server) within timeout and returns the
// source address the server saw.
func DialTCP(netns ns.NetNS, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := netns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	host, _, _ := net.SplitHostPort(strings.TrimSpace(line))
	return host, nil
}

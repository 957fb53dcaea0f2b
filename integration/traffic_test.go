package integration

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/moornet/moor/plugins/plugintest"
)

// dialTimeout bounds one connection attempt in traffic checks.
const dialTimeout = 2 * time.Second

// ping sends one ICMP echo from netns to ip.
func ping(netns ns.NetNS, ip string) error { return plugintest.Ping(netns, ip) }

// serveTCP listens on addr inside netns and answers every connection with one line: the
// remote address it saw. The socket lives in netns; it is closed when the test ends.
func serveTCP(t *testing.T, netns ns.NetNS, addr string) {
	t.Helper()
	var l net.Listener
	err := netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
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

// dialTCP connects from netns to addr and returns the line the server sent: the source
// address it saw.
func dialTCP(netns ns.NetNS, addr string) (string, error) {
	var c net.Conn
	err := netns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, dialTimeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	host, _, _ := net.SplitHostPort(strings.TrimSpace(line))
	return host, nil
}

func execOut(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

package integration

import (
	"os/exec"
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
// remote address it saw.
func serveTCP(t *testing.T, netns ns.NetNS, addr string) { plugintest.ServeTCP(t, netns, addr) }

// dialTCP connects from netns to addr and returns the source address the server saw.
func dialTCP(netns ns.NetNS, addr string) (string, error) {
	return plugintest.DialTCP(netns, addr, dialTimeout)
}

func execOut(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

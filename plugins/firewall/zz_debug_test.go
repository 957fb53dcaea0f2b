package firewall

import (
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

func TestZZDump(t *testing.T) {
	for _, kind := range labBackends {
		l := newLab(t, kind)
		n := l.addNetwork("dump", nil)
		c := l.addContainer(n, "c1")
		l.publish(c, PortMapping{HostPort: 8080, ContainerPort: 80}, PortMapping{HostPort: 8081, ContainerPort: 80, HostIP: "192.0.2.1", Protocol: "udp"})
		_ = l.host.Do(func(ns.NetNS) error {
			out, _ := exec.Command("nft", "--debug=netlink", "list", "set", "inet", "moor", "bridges").CombinedOutput()
			t.Logf("%s nft:\n%s", kind, out)
			if kind == KindIPTables {
				out, _ = exec.Command("ip6tables-save").CombinedOutput()
				t.Logf("%s ip6tables-save:\n%s", kind, out)
			}
			return nil
		})
	}
}

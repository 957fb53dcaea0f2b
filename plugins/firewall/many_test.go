package firewall

import (
	"testing"

	"github.com/moornet/moor/plugins/codes"
)

// TestManyPortMappings: one ADD with 1,000 mappings (2,000 DNAT rules with IPv4 and
// IPv6) succeeds in one operation and its ports answer; a re-ADD and the DEL work;
// MaxPortMappings+1 is refused with code 7 and leaves nothing.
func TestManyPortMappings(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		const count, first = 1000, 20000
		n := l.addNetwork("many", nil)
		c1, c2 := l.addContainer(n, "c1"), l.addContainer(n, "c2")
		serveWhoami(t, c1.ns, whoamiPort)
		ports := make([]PortMapping, count)
		for i := range ports {
			ports[i] = PortMapping{HostPort: first + i, ContainerPort: whoamiPort}
		}
		a := l.publish(c1, ports...)
		for _, p := range []int{first, first + count/2, first + count - 1} {
			expectSeenAs(t, "spot check v4", l.outside, "tcp", hostPort(hostOut4.IP, p), outside4.IP)
			expectSeenAs(t, "spot check v6", l.outside, "tcp", hostPort(hostOut6.IP, p), outside6.IP)
		}
		must(t, "CheckAttachment", l.fw.CheckAttachment(n.Network, a))
		l.publish(c1, ports...) // unchanged re-ADD

		over := make([]PortMapping, MaxPortMappings+1)
		for i := range over {
			over[i] = PortMapping{HostPort: 1 + i, ContainerPort: whoamiPort}
		}
		err := l.fw.AddAttachment(n.Network, c2.attachment(over...))
		expectCode(t, "past the limit", err, codes.InvalidNetworkConfig, "portMappings", "at most 1024")
		if k := attachmentRuleCount(t, l, c2.attachment().Key()); k != 0 {
			t.Fatalf("refused ADD left %d rules", k)
		}

		must(t, "DelAttachment", l.fw.DelAttachment(a.Network, a.ContainerID, a.IfName))
		if k := attachmentRuleCount(t, l, a.Key()); k != 0 {
			t.Fatalf("DEL left %d rules", k)
		}
		expectRefused(t, "after DEL", l.outside, hostPort(hostOut4.IP, first))
	})
}

package firewall

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
)

// benchAttachment sets up a lab with one network in place and a container with one
// published port, and returns the pieces a benchmark times.
func benchAttachment(b *testing.B, kind string) (*lab, Network, Attachment) {
	l := newLab(b, kind)
	n := l.addNetwork("bench", nil)
	c := l.addContainer(n, "c1")
	return l, n.Network, c.attachment(PortMapping{HostPort: pubPort, ContainerPort: whoamiPort})
}

// BenchmarkADD measures one ADD (AddAttachment: network ensured, one published port)
// of a new attachment, per backend, in a lab netns where the network exists; the DEL
// between iterations is not timed.
//
//	go test -run '^$' -bench . ./plugins/firewall/
func BenchmarkADD(b *testing.B) {
	requireRoot(b)
	for _, kind := range labBackends {
		b.Run(kind, func(b *testing.B) {
			l, n, a := benchAttachment(b, kind)
			for i := 0; i < b.N; i++ {
				must(b, "AddAttachment", l.fw.AddAttachment(n, a))
				b.StopTimer()
				must(b, "DelAttachment", l.fw.DelAttachment(a.Network, a.ContainerID, a.IfName))
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDEL measures DelAttachment of an attachment with one published port.
func BenchmarkDEL(b *testing.B) {
	requireRoot(b)
	for _, kind := range labBackends {
		b.Run(kind, func(b *testing.B) {
			l, n, a := benchAttachment(b, kind)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				must(b, "AddAttachment", l.fw.AddAttachment(n, a))
				b.StartTimer()
				must(b, "DelAttachment", l.fw.DelAttachment(a.Network, a.ContainerID, a.IfName))
			}
		})
	}
}

// BenchmarkEnsureNetwork measures EnsureNetwork on a network that is already in place
// (the steady state).
func BenchmarkEnsureNetwork(b *testing.B) {
	requireRoot(b)
	for _, kind := range labBackends {
		b.Run(kind, func(b *testing.B) {
			l, n, _ := benchAttachment(b, kind)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				must(b, "EnsureNetwork", l.fw.EnsureNetwork(n))
			}
		})
	}
}

// BenchmarkAddMacSpoof measures AddMacSpoof of a new attachment on a bridge that already
// has 10 or 1,000 attachments' rules (how the ADD's cost grows with the containers of the
// host); the DEL between iterations is not timed.
func BenchmarkAddMacSpoof(b *testing.B) {
	requireRoot(b)
	for _, existing := range []int{10, 1000} {
		b.Run(fmt.Sprint(existing), func(b *testing.B) {
			ns := newNS(b)
			opts := Options{NetNS: ns, LockFile: filepath.Join(b.TempDir(), "fw.lock")}
			mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
			for i := range existing {
				must(b, "AddMacSpoof", AddMacSpoof(opts, MacSpoof{Network: "bench", ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0", HostIf: fmt.Sprintf("veth%d", i), MAC: mac}))
			}
			m := MacSpoof{Network: "bench", ContainerID: "new", IfName: "eth0", HostIf: "vethnew", MAC: mac}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				must(b, "AddMacSpoof", AddMacSpoof(opts, m))
				b.StopTimer()
				must(b, "DelMacSpoof", DelMacSpoof(opts, m.Network, m.ContainerID, m.IfName))
				b.StartTimer()
			}
		})
	}
}

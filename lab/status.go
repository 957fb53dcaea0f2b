package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/lease"
)

// matrixWorkers bounds the pings in flight while the matrix is built.
const matrixWorkers = 16

// Matrix cells.
const (
	CellOK   = "ok"
	CellFail = "FAIL"
	CellSelf = "-"
	CellNone = "" // no common network
)

// Status is a lab's state as Status reads it.
type Status struct {
	Name       string
	Dir        string
	Etcd       []MemberStatus
	Hosts      []HostStatus
	Leases     []LeaseStatus
	Containers []ContainerStatus
	// Matrix[i][j] tells whether container Names[i] reaches Names[j] by name (by address
	// on networks without DNS). Nil when not asked for.
	Names  []string
	Matrix [][]string
	// Problems found while reading (etcd unreachable, ...).
	Problems []string
}

// MemberStatus is one etcd member.
type MemberStatus struct {
	Name, URL string
	PID       int
	Running   bool
}

// HostStatus is one host.
type HostStatus struct {
	Name, HostID, Underlay string
	AgentPID               int
	AgentRunning           bool
	AgentReady             bool
	DNSPID                 int
	DNSRunning             bool
	Left                   bool
}

// LeaseStatus is one lease in etcd.
type LeaseStatus struct {
	Network, HostID, Subnet, VTEPMAC, Underlay string
}

// ContainerStatus is one attachment.
type ContainerStatus struct {
	Name, Host, Network, IfName, IP string
}

// Status reads the lab: processes, leases from etcd, containers and, with matrix, the
// connectivity matrix (every container pings every other one it shares a network with,
// resolving the name through its DNS server on networks with DNS).
func (l *Lab) Status(ctx context.Context, matrix bool) *Status {
	s := &Status{Name: l.Name, Dir: l.Dir}
	for _, m := range l.Members {
		s.Etcd = append(s.Etcd, MemberStatus{Name: m.Name, URL: m.ClientURL, PID: m.Proc.PID, Running: m.Proc.Alive()})
	}
	for _, h := range l.Hosts {
		hs := HostStatus{Name: h.Name, HostID: h.HostID, Underlay: h.Underlay, AgentPID: h.Agent.PID, AgentRunning: h.Agent.Alive(),
			DNSPID: h.DNS.PID, DNSRunning: h.DNS.Alive(), Left: h.Left}
		hs.AgentReady = hs.AgentRunning && agent.Healthy(h.AgentEndpoint(), "")
		if h.DNS.PID > 0 && hs.DNSRunning && !server.Healthy(filepath.Join(h.Dir, "dns.sock")) {
			s.Problems = append(s.Problems, "DNS sidecar of "+h.Name+" does not answer")
		}
		s.Hosts = append(s.Hosts, hs)
	}
	s.readLeases(ctx, l)
	for _, c := range l.Containers {
		for _, a := range c.Attachments {
			s.Containers = append(s.Containers, ContainerStatus{Name: c.Name, Host: c.Host, Network: a.Network, IfName: a.IfName, IP: a.IP})
		}
	}
	if matrix {
		s.buildMatrix(l)
	}
	return s
}

func (s *Status) readLeases(ctx context.Context, l *Lab) {
	cli, err := l.Client()
	if err != nil {
		s.Problems = append(s.Problems, "etcd: "+err.Error())
		return
	}
	defer cli.Close()
	for _, n := range l.Spec.Networks {
		leases, _, err := lease.New(cli, lease.Options{Prefix: overlayPrefix, Network: n.Name}).List(ctx)
		if err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("leases of %s: %v", n.Name, err))
			continue
		}
		for _, x := range leases {
			s.Leases = append(s.Leases, LeaseStatus{Network: n.Name, HostID: x.HostID, Subnet: x.Subnet.String(), VTEPMAC: x.VTEPMAC.String(), Underlay: x.Underlay.String()})
		}
	}
}

func (s *Status) buildMatrix(l *Lab) {
	cs := l.Containers
	s.Matrix = make([][]string, len(cs))
	for i, c := range cs {
		s.Names = append(s.Names, c.Name)
		s.Matrix[i] = make([]string, len(cs))
	}
	sem := make(chan struct{}, matrixWorkers)
	var wg sync.WaitGroup
	for i := range cs {
		for j := range cs {
			if i == j {
				s.Matrix[i][j] = CellSelf
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				s.Matrix[i][j] = l.reach(cs[i], cs[j])
			}()
		}
	}
	wg.Wait()
}

// reach tells whether from pings to over their first common network, by name when the
// network has DNS.
func (l *Lab) reach(from, to Container) string {
	for _, a := range from.Attachments {
		for _, b := range to.Attachments {
			if a.Network != b.Network || b.IP == "" {
				continue
			}
			target := netip.MustParseAddr(b.IP)
			if l.hasDNS(a.Network) {
				got, err := l.Resolve(from.Name, a.Network, to.Name)
				if err != nil || got != target {
					return CellFail
				}
			}
			if err := l.Ping(from.Name, target); err != nil {
				return CellFail
			}
			return CellOK
		}
	}
	return CellNone
}

func (l *Lab) hasDNS(network string) bool {
	for _, n := range l.Spec.Networks {
		if n.Name == network {
			return n.DNS
		}
	}
	return false
}

// Print writes the status as tables.
func (s *Status) Print(w io.Writer) {
	fmt.Fprintf(w, "LAB %s (state in %s)\n\n", s.Name, s.Dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ETCD\tURL\tPID\tRUNNING")
	for _, m := range s.Etcd {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\n", m.Name, m.URL, m.PID, m.Running)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "HOST\tHOST ID\tUNDERLAY\tAGENT\tDNS")
	for _, h := range s.Hosts {
		ag := fmt.Sprintf("pid %d %s", h.AgentPID, state(h.AgentRunning, h.AgentReady))
		if h.Left {
			ag = "left"
		}
		dns := "-"
		if h.DNSPID > 0 {
			dns = fmt.Sprintf("pid %d %s", h.DNSPID, state(h.DNSRunning, h.DNSRunning))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.HostID, h.Underlay, ag, dns)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NETWORK\tLEASE HOLDER\tSUBNET\tVTEP MAC\tUNDERLAY")
	for _, x := range s.Leases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Network, x.HostID, x.Subnet, x.VTEPMAC, x.Underlay)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CONTAINER\tHOST\tNETWORK\tINTERFACE\tADDRESS")
	for _, c := range s.Containers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Host, c.Network, c.IfName, c.IP)
	}
	_ = tw.Flush()
	if s.Matrix != nil {
		fmt.Fprintln(w, "\nCONNECTIVITY (ping by name; row pings column)")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\t"+strings.Join(s.Names, "\t"))
		for i, row := range s.Matrix {
			fmt.Fprintln(tw, s.Names[i]+"\t"+strings.Join(row, "\t"))
		}
		_ = tw.Flush()
	}
	for _, p := range s.Problems {
		fmt.Fprintln(w, "problem:", p)
	}
}

func state(running, ready bool) string {
	switch {
	case ready:
		return "ready"
	case running:
		return "running, not ready"
	}
	return "not running"
}

// Reachable reports whether every cell of the matrix between containers sharing a network
// is ok.
func (s *Status) Reachable() bool {
	for _, row := range s.Matrix {
		for _, c := range row {
			if c == CellFail {
				return false
			}
		}
	}
	return true
}

// Command overlaybench measures moor's overlay on labs built with package lab (see
// scripts/bench-overlay.sh, which builds the binaries and runs it as root):
//
//   - throughput: iperf3 TCP between two hosts of a lab, container to container over
//     moor-overlay, against the same pair of hosts over a hand-built kernel VXLAN device
//     (no bridge, no container veth, no routing hop) and over the bare underlay; modes
//     interleaved per round, medians reported;
//   - convergence: in a lab of -hosts hosts (agents only), a new host joins; the time from
//     its lease appearing in etcd (the watch event) until every other host's kernel holds
//     its route (the last entry written, after neighbour and FDB), seen through netlink
//     route subscriptions in every host's namespace; and the same for the host leaving;
//   - with -planes, throughput compares the data planes instead: container to container
//     over an encrypted (WireGuard) network and over a clear VXLAN network of the same
//     lab, and the bare underlay (wireguard.go);
//   - with -rotate-hosts N, key rotation in an N-host encrypted lab: from asking one
//     host's agent to rotate its key to every other host holding the new key and
//     reaching the host again (wireguard.go).
//
// In the VM lane's guest (MOOR_VMTEST=1, see scripts/bench-overlay.sh VM=1) the labs get
// a start budget of minutes (lab.Options.StartBudget): the guest's CPU is emulated.
//
// It touches only the namespaces the labs make, and takes them down at the end.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/overlay/agent"
)

// Benchmark constants.
const (
	network        = "ov"
	hvxDevice      = "hvx0"
	hvxVNI         = "99"
	hvxPort        = "4790"
	hvxNet         = "10.99.0."
	iperfPort      = "5201"
	serverSettle   = 300 * time.Millisecond
	convergeBound  = 60 * time.Second
	overlayProto   = 77
	leasesKeyPart  = "/leases/"
	benchLabPrefix = "mbench"
)

type options struct {
	binDir   string
	root     string
	rounds   int
	seconds  int
	hosts    int
	joins    int
	skipTput bool
	skipConv bool
	// planes: throughput compares WireGuard, VXLAN and the underlay.
	planes      bool
	rotateHosts int
	rotations   int
	startBudget time.Duration
}

func main() {
	var o options
	binDir := "bin"
	if d := os.Getenv("MOOR_TEST_BIN_DIR"); d != "" {
		binDir = d // the VM lane's guest
	}
	budget := time.Duration(0)
	if os.Getenv("MOOR_VMTEST") == "1" {
		budget = 5 * time.Minute
	}
	flag.StringVar(&o.binDir, "bin-dir", binDir, "directory of the moor binaries")
	flag.StringVar(&o.root, "lab-dir", "", "lab state directory (default: a temporary one)")
	flag.IntVar(&o.rounds, "rounds", 3, "throughput rounds (each mode once per round)")
	flag.IntVar(&o.seconds, "seconds", 5, "iperf3 duration per run")
	flag.IntVar(&o.hosts, "hosts", 50, "hosts in the convergence lab")
	flag.IntVar(&o.joins, "joins", 5, "hosts that join (and leave) the convergence lab, one after the other")
	flag.BoolVar(&o.skipTput, "no-throughput", false, "skip the throughput runs")
	flag.BoolVar(&o.skipConv, "no-convergence", false, "skip the convergence runs")
	flag.BoolVar(&o.planes, "planes", false, "throughput: WireGuard overlay vs clear VXLAN overlay vs underlay")
	flag.IntVar(&o.rotateHosts, "rotate-hosts", 0, "hosts in the key rotation lab (0: no rotation runs)")
	flag.IntVar(&o.rotations, "rotations", 5, "key rotations, each of another host")
	flag.DurationVar(&o.startBudget, "start-budget", budget, "lab.Options.StartBudget (minutes on an emulated CPU)")
	flag.Parse()
	if o.root == "" {
		dir, err := os.MkdirTemp("", "overlaybench")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
		o.root = dir
	}
	if !o.skipTput {
		tput := throughput
		if o.planes {
			tput = planesThroughput
		}
		if err := tput(o); err != nil {
			fail(err)
		}
	}
	if o.rotateHosts > 0 {
		if err := rotation(o); err != nil {
			fail(err)
		}
	}
	if !o.skipConv {
		if err := convergence(o); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "overlaybench:", err)
	os.Exit(1)
}

func up(o options, yaml string) (*lab.Lab, error) {
	name := fmt.Sprintf("%s-%d", benchLabPrefix, os.Getpid())
	spec, err := lab.Parse([]byte("name: "+name+"\n"+yaml), name)
	if err != nil {
		return nil, err
	}
	return lab.Up(context.Background(), spec, lab.Options{Root: o.root, BinDir: o.binDir, Progress: os.Stderr, StartBudget: o.startBudget})
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// iperf runs one TCP test from client netns to server netns at addr; bits per second.
func iperf(serverNS, clientNS, addr string, seconds int) (float64, error) {
	srv := exec.Command("ip", "netns", "exec", serverNS, "iperf3", "-s", "-1", "-p", iperfPort)
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(serverSettle)
	out, err := exec.Command("ip", "netns", "exec", clientNS, "iperf3", "-c", addr, "-p", iperfPort, "-t", fmt.Sprint(seconds), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 to %s: %w: %s", addr, err, out)
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, err
	}
	if res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 to %s measured nothing: %q", addr, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}

// throughput compares overlay, hand-built VXLAN and bare underlay between two hosts.
func throughput(o options) error {
	l, err := up(o, "underlay: 172.31.250.0/24\nnetworks: [{name: ov, subnet: 10.250.0.0/16, vni: 42}]\nhosts: [{name: h1, containers: [c1]}, {name: h2, containers: [c2]}]\n")
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	h1, _ := l.Host("h1")
	h2, _ := l.Host("h2")
	c1, _ := l.Container("c1")
	c2, _ := l.Container("c2")
	// The hand-built VXLAN: one device per host, straight on the underlay, L2 between
	// the two with a static FDB entry each way.
	for _, x := range []struct{ ns, local, remote, addr string }{
		{h1.Netns, h1.Underlay, h2.Underlay, hvxNet + "1/24"},
		{h2.Netns, h2.Underlay, h1.Underlay, hvxNet + "2/24"},
	} {
		for _, cmd := range [][]string{
			{"ip", "-n", x.ns, "link", "add", hvxDevice, "type", "vxlan", "id", hvxVNI, "dstport", hvxPort, "local", x.local, "dev", "eth0", "nolearning"},
			{"ip", "-n", x.ns, "link", "set", hvxDevice, "mtu", "1450", "up"},
			{"ip", "-n", x.ns, "addr", "add", x.addr, "dev", hvxDevice},
			{"bridge", "-n", x.ns, "fdb", "append", "00:00:00:00:00:00", "dev", hvxDevice, "dst", x.remote},
		} {
			if err := run(cmd...); err != nil {
				return err
			}
		}
	}
	modes := []*mode{
		{name: "moor-overlay (container to container)", server: c2.Netns, client: c1.Netns, addr: c2.Attachments[0].IP},
		{name: "hand-built kernel VXLAN (host to host)", server: h2.Netns, client: h1.Netns, addr: hvxNet + "2"},
		{name: "bare underlay (host to host)", server: h2.Netns, client: h1.Netns, addr: h2.Underlay},
	}
	if err := runModes(o, modes); err != nil {
		return err
	}
	base := median(modes[2].runs)
	fmt.Printf("\nTCP throughput, iperf3 -t %d, median of %d rounds\n", o.seconds, o.rounds)
	fmt.Printf("%-42s %12s %12s\n", "path", "Gbit/s", "vs underlay")
	for _, m := range modes {
		v := median(m.runs)
		fmt.Printf("%-42s %12.2f %11.0f%%\n", m.name, v/1e9, 100*v/base)
	}
	return nil
}

// mode is one path iperf3 measures: client netns to the server's address.
type mode struct {
	name           string
	server, client string
	addr           string
	runs           []float64 // bits per second, one per round
}

// runModes runs every mode once per round, interleaved, retrying a run that measured
// nothing (an emulated guest on a busy machine now and then does).
func runModes(o options, modes []*mode) error {
	for r := range o.rounds {
		for _, m := range modes {
			bps, err := iperf(m.server, m.client, m.addr, o.seconds)
			for try := 1; err != nil && try < iperfTries; try++ {
				fmt.Fprintf(os.Stderr, "round %d %s: %v; again\n", r+1, m.name, err)
				bps, err = iperf(m.server, m.client, m.addr, o.seconds)
			}
			if err != nil {
				return err
			}
			m.runs = append(m.runs, bps)
			fmt.Fprintf(os.Stderr, "round %d %s: %.0f Mbit/s\n", r+1, m.name, bps/1e6)
		}
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func medianDur(v []time.Duration) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// routeWatch records, per host namespace, when a route to a subnet appeared or vanished.
type routeWatch struct {
	mu    sync.Mutex
	seen  map[string]map[string]time.Time // "new"/"del" + subnet -> host -> time
	done  chan struct{}
	close []func()
}

func watchRoutes(hosts []*lab.Host) (*routeWatch, error) {
	w := &routeWatch{seen: map[string]map[string]time.Time{}, done: make(chan struct{})}
	for _, h := range hosts {
		nsh, err := netns.GetFromPath(h.NetnsPath())
		if err != nil {
			return nil, err
		}
		ch := make(chan netlink.RouteUpdate, 256)
		if err := netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{Namespace: &nsh}); err != nil {
			nsh.Close()
			return nil, err
		}
		w.close = append(w.close, func() { nsh.Close() })
		go func() {
			for u := range ch {
				if u.Protocol != overlayProto || u.Dst == nil {
					continue
				}
				kind := "new"
				if u.Type == unix.RTM_DELROUTE {
					kind = "del"
				}
				key := kind + u.Dst.String()
				w.mu.Lock()
				if w.seen[key] == nil {
					w.seen[key] = map[string]time.Time{}
				}
				if _, ok := w.seen[key][h.Name]; !ok {
					w.seen[key][h.Name] = time.Now()
				}
				w.mu.Unlock()
			}
		}()
	}
	return w, nil
}

func (w *routeWatch) stop() {
	close(w.done)
	for _, c := range w.close {
		c()
	}
}

// wait returns, once every host saw the change, the latest and the median time after t0.
func (w *routeWatch) wait(kind, subnet string, hosts int, t0 time.Time) (last, mid time.Duration, err error) {
	deadline := time.Now().Add(convergeBound)
	for {
		w.mu.Lock()
		got := w.seen[kind+subnet]
		var ds []time.Duration
		for _, t := range got {
			ds = append(ds, t.Sub(t0))
		}
		w.mu.Unlock()
		if len(ds) >= hosts {
			slices.Sort(ds)
			return ds[len(ds)-1], ds[len(ds)/2], nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s route %s seen on %d of %d hosts after %s", kind, subnet, len(ds), hosts, convergeBound)
		}
		time.Sleep(time.Millisecond)
	}
}

// leaseEvent waits for the PUT or DELETE of host's lease and returns the lease's creation
// time (written by the claiming agent just before its transaction) and subnet.
func leaseEvent(ctx context.Context, events clientv3.WatchChan, hostID string, put bool) (time.Time, string, error) {
	for resp := range events {
		for _, ev := range resp.Events {
			if !strings.Contains(string(ev.Kv.Key), leasesKeyPart) || (ev.Type == mvccpb.PUT) != put {
				continue
			}
			kv := ev.Kv
			if !put {
				kv = ev.PrevKv
			}
			var l struct {
				HostID  string    `json:"hostID"`
				Subnet  string    `json:"subnet"`
				Created time.Time `json:"created"`
			}
			if kv == nil || json.Unmarshal(kv.Value, &l) != nil || l.HostID != hostID {
				continue
			}
			return l.Created, netip.MustParsePrefix(l.Subnet).String(), nil
		}
	}
	return time.Time{}, "", fmt.Errorf("lease watch ended: %v", ctx.Err())
}

// watchLeases opens a watch of the network's keys and waits until etcd has created it.
func watchLeases(ctx context.Context, cli *clientv3.Client) (clientv3.WatchChan, error) {
	events := cli.Watch(ctx, "/moor/overlay/"+network+"/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	resp, ok := <-events
	if !ok || !resp.Created {
		return nil, fmt.Errorf("lease watch not created: %v", resp.Err())
	}
	return events, nil
}

// convergence: hosts join and leave a lab of o.hosts hosts.
func convergence(o options) error {
	var b strings.Builder
	b.WriteString("underlay: 172.31.251.0/24\nagent: {resync: 10s}\nnetworks: [{name: ov, subnet: 10.251.0.0/16, vni: 42}]\nhosts:\n")
	for i := 1; i <= o.hosts; i++ {
		fmt.Fprintf(&b, "  - {name: n%03d}\n", i)
	}
	l, err := up(o, b.String())
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	cli, err := l.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx := context.Background()
	observers := slices.Clone(l.Hosts)
	w, err := watchRoutes(observers)
	if err != nil {
		return err
	}
	defer w.stop()
	var joins, joinMid, leaves, leaveMid []time.Duration
	for j := range o.joins {
		name := fmt.Sprintf("j%02d", j+1)
		wctx, cancel := context.WithCancel(ctx)
		events, err := watchLeases(wctx, cli)
		if err != nil {
			cancel()
			return err
		}
		if _, err := l.AddHost(ctx, name, false); err != nil {
			cancel()
			return err
		}
		t0, subnet, err := leaseEvent(wctx, events, l.Name+"-"+name, true)
		cancel()
		if err != nil {
			return err
		}
		last, mid, err := w.wait("new", subnet, len(observers), t0)
		if err != nil {
			return err
		}
		joins, joinMid = append(joins, last), append(joinMid, mid)
		fmt.Fprintf(os.Stderr, "join %s (%s): all %d hosts in %s (median host %s)\n", name, subnet, len(observers), last, mid)
		if err := waitHealthy(l, name); err != nil {
			return err
		}
		// No timestamp marks a release in etcd: the clock starts before the leave command
		// is run, so the figure includes its exec and the agent stopping (an upper bound).
		t0 = time.Now()
		if err := l.LeaveHost(ctx, name); err != nil {
			return err
		}
		last, mid, err = w.wait("del", subnet, len(observers), t0)
		if err != nil {
			return err
		}
		leaves, leaveMid = append(leaves, last), append(leaveMid, mid)
		fmt.Fprintf(os.Stderr, "leave %s: all %d hosts in %s (median host %s)\n", name, len(observers), last, mid)
		w.mu.Lock()
		delete(w.seen, "new"+subnet)
		delete(w.seen, "del"+subnet)
		w.mu.Unlock()
	}
	fmt.Printf("\nConvergence in a %d-host lab (agents, etcd watch), %d joins and leaves\n", o.hosts, o.joins)
	fmt.Println("join: from the lease's creation to the route on every other host; leave: from running `agent --leave`")
	fmt.Printf("%-8s %16s %16s %16s\n", "event", "median (all)", "max (all)", "median host")
	fmt.Printf("%-8s %16s %16s %16s\n", "join", medianDur(joins), slices.Max(joins), medianDur(joinMid))
	fmt.Printf("%-8s %16s %16s %16s\n", "leave", medianDur(leaves), slices.Max(leaves), medianDur(leaveMid))
	return nil
}

func waitHealthy(l *lab.Lab, host string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(convergeBound)
	for !agentHealthy(h) {
		if time.Now().After(deadline) {
			return fmt.Errorf("agent of %s not healthy", host)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func agentHealthy(h *lab.Host) bool { return agent.Healthy(h.AgentEndpoint(), "") }

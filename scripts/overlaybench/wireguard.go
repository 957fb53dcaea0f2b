package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/wireguard"
)

// The encrypted overlay's benchmarks (-planes, -rotate-hosts).
const (
	wgNetwork   = "wg"
	vxNetwork   = "vx"
	rotateNet   = "ov"
	rotateVNI   = 42
	keyPoll     = 100 * time.Millisecond
	rotateBound = 2 * time.Minute
	iperfTries  = 3 // an emulated guest on a busy machine now and then measures nothing
	logWait     = 10 * time.Second
)

// planesThroughput compares, between the same two hosts of one lab, container to
// container over an encrypted (WireGuard) network, over a clear VXLAN network, and the
// bare underlay host to host; modes interleaved per round, medians and ratios reported.
func planesThroughput(o options) error {
	l, err := up(o, `underlay: 172.31.250.0/24
networks:
  - {name: `+wgNetwork+`, subnet: 10.250.0.0/16, vni: 42, encryption: wireguard}
  - {name: `+vxNetwork+`, subnet: 10.249.0.0/16, vni: 43}
hosts:
  - {name: h1, containers: [{name: c1w, networks: [`+wgNetwork+`]}, {name: c1v, networks: [`+vxNetwork+`]}]}
  - {name: h2, containers: [{name: c2w, networks: [`+wgNetwork+`]}, {name: c2v, networks: [`+vxNetwork+`]}]}
`)
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	h1, _ := l.Host("h1")
	h2, _ := l.Host("h2")
	c1w, _ := l.Container("c1w")
	c2w, _ := l.Container("c2w")
	c1v, _ := l.Container("c1v")
	c2v, _ := l.Container("c2v")
	modes := []*mode{
		{name: "WireGuard overlay (container to container)", server: c2w.Netns, client: c1w.Netns, addr: c2w.Attachments[0].IP},
		{name: "clear VXLAN overlay (container to container)", server: c2v.Netns, client: c1v.Netns, addr: c2v.Attachments[0].IP},
		{name: "bare underlay (host to host)", server: h2.Netns, client: h1.Netns, addr: h2.Underlay},
	}
	if err := runModes(o, modes); err != nil {
		return err
	}
	wg, vx, under := median(modes[0].runs), median(modes[1].runs), median(modes[2].runs)
	fmt.Printf("\nTCP throughput by data plane, iperf3 -t %d, %d rounds (modes interleaved)\n", o.seconds, o.rounds)
	fmt.Printf("%-46s %10s %26s\n", "path", "median", "rounds (Mbit/s)")
	for _, m := range modes {
		var rs []string
		for _, v := range m.runs {
			rs = append(rs, fmt.Sprintf("%.0f", v/1e6))
		}
		fmt.Printf("%-46s %6.0f Mbit/s  %s\n", m.name, median(m.runs)/1e6, strings.Join(rs, " "))
	}
	fmt.Printf("ratios of the medians: WireGuard / VXLAN %.2fx, WireGuard / underlay %.2fx, VXLAN / underlay %.2fx\n", wg/vx, wg/under, vx/under)
	var per []string
	for i := range modes[0].runs {
		per = append(per, fmt.Sprintf("%.2f", modes[0].runs[i]/modes[1].runs[i]))
	}
	fmt.Printf("WireGuard / VXLAN per round: %s\n", strings.Join(per, " "))
	fmt.Printf("CPU features the kernel's ChaCha20-Poly1305 picks its code by: %s\n", simdFlags())
	fmt.Printf("ChaCha20-Poly1305 on this CPU, one core, 1420-byte messages (openssl speed): %s\n", cipherSpeed())
	return nil
}

// cipherSpeed is openssl's ChaCha20-Poly1305 rate on WireGuard-sized messages: what the
// CPU (emulated or not) gives the cipher alone.
func cipherSpeed() string {
	out, err := exec.Command("openssl", "speed", "-seconds", "2", "-bytes", "1420", "-evp", "chacha20-poly1305").Output()
	if err != nil {
		return "openssl speed: " + err.Error()
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.EqualFold(f[0], "ChaCha20-Poly1305") {
			var kbps float64
			if _, err := fmt.Sscanf(strings.TrimSuffix(f[1], "k"), "%g", &kbps); err == nil {
				return fmt.Sprintf("%.0f Mbit/s", kbps*8/1000)
			}
		}
	}
	return "openssl speed printed no rate"
}

// simdFlags says which of the vector extensions the kernel's ChaCha20 and Poly1305 code
// uses are present (an emulated CPU runs each one at a very different cost).
func simdFlags() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return err.Error()
	}
	var flags []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = strings.Fields(v)
			break
		}
	}
	var out []string
	for _, f := range []string{"ssse3", "avx", "avx2", "avx512f", "avx512vl"} {
		out = append(out, fmt.Sprintf("%s %v", f, slices.Contains(flags, f)))
	}
	return strings.Join(out, ", ")
}

// rotation: in a lab of o.rotateHosts hosts (agents only, one encrypted network), one host
// after the other rotates its key through its agent (the request `moor-overlay agent
// --rotate-key` sends). Two times per other host, from the request on:
//   - key: when its agent applied the rotated host's new lease to its device (the agent
//     logs "host joined" with a millisecond timestamp right after the netlink request; read
//     from the logs afterwards, so nothing polls the devices while the change spreads);
//   - traffic: when its first ICMP echo to the rotated host's gateway, sent every
//     pingEvery from a socket in its namespace, is answered after the key time.
//
// Afterwards every other host's device is checked to hold the new key and not the old one.
func rotation(o options) error {
	var b strings.Builder
	fmt.Fprintf(&b, "underlay: 172.31.248.0/24\nagent: {resync: 30s}\nnetworks: [{name: %s, subnet: 10.248.0.0/16, vni: %d, encryption: wireguard}]\nhosts:\n", rotateNet, rotateVNI)
	for i := 1; i <= o.rotateHosts; i++ {
		fmt.Fprintf(&b, "  - {name: r%02d}\n", i)
	}
	start := time.Now()
	l, err := up(o, b.String())
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	fmt.Fprintf(os.Stderr, "rotation lab of %d hosts up in %s\n", o.rotateHosts, time.Since(start).Round(time.Second))
	device := fmt.Sprintf("moorwg%d", rotateVNI)
	var keysAll, flowAll []time.Duration
	for r := range o.rotations {
		h := l.Hosts[r%len(l.Hosts)]
		gw, err := gatewayOf(l, h.HostID)
		if err != nil {
			return err
		}
		stateDir := filepath.Join(h.Dir, "state")
		old, err := wireguard.LoadKey(stateDir, rotateNet)
		if err != nil {
			return err
		}
		var others []*lab.Host
		for _, x := range l.Hosts {
			if x != h {
				others = append(others, x)
			}
		}
		for _, x := range others {
			if err := waitKey(x, device, old.Public(), wireguard.Key{}, time.Now().Add(rotateBound)); err != nil {
				return err
			}
		}
		pingers := make([]*pinger, len(others))
		for i, x := range others {
			if pingers[i], err = startPinger(x, gw); err != nil {
				return err
			}
		}
		time.Sleep(settleBeforeRotation) // every pinger answered before the clock starts
		t0 := time.Now()
		if err := agent.RequestRotateKey(h.AgentEndpoint()); err != nil {
			return err
		}
		answered := time.Since(t0)
		nk, err := wireguard.LoadKey(stateDir, rotateNet)
		if err != nil {
			return err
		}
		if nk == old {
			return fmt.Errorf("%s: the key did not change", h.Name)
		}
		keys := make([]time.Duration, len(others))
		flows := make([]time.Duration, len(others))
		for i, x := range others {
			if err := waitKey(x, device, nk.Public(), old.Public(), t0.Add(rotateBound)); err != nil {
				return err
			}
			// the agent logs right after its netlink requests: the device can hold the key
			// a moment before the line is written
			applied, fallback, err := joinedAt(x, h.HostID, t0)
			for deadline := time.Now().Add(logWait); err != nil && time.Now().Before(deadline); {
				time.Sleep(keyPoll)
				applied, fallback, err = joinedAt(x, h.HostID, t0)
			}
			if err != nil {
				return err
			}
			if fallback {
				fmt.Fprintf(os.Stderr, "rotation %d: %s applied %s's key without a \"host joined\" line; its first log line naming the host after the request counts\n", r+1, x.Name, h.Name)
			}
			keys[i] = applied.Sub(t0)
			answeredAt, err := pingers[i].firstReplyAfter(applied, t0.Add(rotateBound))
			if err != nil {
				return fmt.Errorf("%s to %s's gateway %s after the rotation: %w", x.Name, h.Name, gw, err)
			}
			flows[i] = answeredAt.Sub(t0)
		}
		for _, p := range pingers {
			p.stop()
		}
		kmax, fmax := slices.Max(keys), slices.Max(flows)
		keysAll, flowAll = append(keysAll, kmax), append(flowAll, fmax)
		fmt.Fprintf(os.Stderr, "rotation %d of %s: agent answered in %s; new key on all %d other hosts in %s (median host %s); traffic from all in %s (median host %s)\n",
			r+1, h.Name, answered.Round(time.Millisecond), len(others), kmax.Round(time.Millisecond), medianDur(keys).Round(time.Millisecond),
			fmax.Round(time.Millisecond), medianDur(flows).Round(time.Millisecond))
	}
	fmt.Printf("\nKey rotation in a %d-host WireGuard lab, %d rotations (each of another host)\n", o.rotateHosts, o.rotations)
	fmt.Println("from the rotate-key request to the last of the other hosts applying the new key / answering a ping")
	fmt.Printf("%-26s %12s %12s\n", "", "median", "max")
	fmt.Printf("%-26s %12s %12s\n", "new key on every host", medianDur(keysAll).Round(time.Millisecond), slices.Max(keysAll).Round(time.Millisecond))
	fmt.Printf("%-26s %12s %12s\n", "traffic from every host", medianDur(flowAll).Round(time.Millisecond), slices.Max(flowAll).Round(time.Millisecond))
	return nil
}

// joinedAt is when h's agent applied peer's new lease: its first "host joined" line for
// peer after t0; when the change came another way (a resync, or a session that started
// over on a starved CPU), the first line after t0 that names peer, and fallback is set.
func joinedAt(h *lab.Host, peer string, t0 time.Time) (at time.Time, fallback bool, err error) {
	b, err := os.ReadFile(filepath.Join(h.Dir, "agent.log"))
	if err != nil {
		return time.Time{}, false, err
	}
	var other time.Time
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, peer) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || t.Before(t0.Truncate(time.Millisecond)) {
			continue
		}
		if strings.Contains(line, `msg="host joined"`) && strings.Contains(line, " peer="+peer+" ") {
			return t, false, nil
		}
		if other.IsZero() {
			other = t
		}
	}
	if !other.IsZero() {
		return other, true, nil
	}
	return time.Time{}, false, fmt.Errorf("%s's agent log names %s nowhere after %s", h.Name, peer, t0.Format(time.RFC3339Nano))
}

// Pinger timing.
const (
	pingEvery            = 50 * time.Millisecond
	settleBeforeRotation = 500 * time.Millisecond
)

// pinger sends an ICMP echo every pingEvery from a host's namespace to one address and
// records when replies arrive.
type pinger struct {
	conn    *icmp.PacketConn
	mu      sync.Mutex
	replies []time.Time
	done    chan struct{}
	wg      sync.WaitGroup
}

func startPinger(h *lab.Host, dst netip.Addr) (*pinger, error) {
	n, err := ns.GetNS(h.NetnsPath())
	if err != nil {
		return nil, err
	}
	defer n.Close()
	// the socket opened in n stays bound to it
	conn, err := inNS(n, func() (*icmp.PacketConn, error) { return icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		return nil, err
	}
	p := &pinger{conn: conn, done: make(chan struct{})}
	id := os.Getpid() & 0xffff
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(pingEvery)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("moor-bench")}}
			data, _ := msg.Marshal(nil)
			_, _ = conn.WriteTo(data, &net.IPAddr{IP: net.IP(dst.AsSlice())})
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 1500)
		for {
			nr, from, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed by stop
			}
			m, err := icmp.ParseMessage(1, buf[:nr])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply || from.String() != dst.String() {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				p.mu.Lock()
				p.replies = append(p.replies, time.Now())
				p.mu.Unlock()
			}
		}
	}()
	return p, nil
}

// firstReplyAfter waits for the first reply after t, until deadline.
func (p *pinger) firstReplyAfter(t, deadline time.Time) (time.Time, error) {
	for {
		p.mu.Lock()
		for _, r := range p.replies {
			if r.After(t) {
				p.mu.Unlock()
				return r, nil
			}
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("no echo reply after %s", t.Format(time.RFC3339Nano))
		}
		time.Sleep(pingEvery)
	}
}

func (p *pinger) stop() {
	close(p.done)
	p.conn.Close()
	p.wg.Wait()
}

// gatewayOf is the gateway of hostID's lease on the rotation network.
func gatewayOf(l *lab.Lab, hostID string) (netip.Addr, error) {
	st := l.Status(context.Background(), false)
	for _, le := range st.Leases {
		if le.Network == rotateNet && le.HostID == hostID {
			p, err := netip.ParsePrefix(le.Subnet)
			if err != nil {
				return netip.Addr{}, err
			}
			return p.Addr().Next(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no lease of %s on %s", hostID, rotateNet)
}

// waitKey polls h's WireGuard device until a peer has key want and none has gone (the
// zero key: no such check).
func waitKey(h *lab.Host, device string, want, gone wireguard.Key, deadline time.Time) error {
	n, err := ns.GetNS(h.NetnsPath())
	if err != nil {
		return err
	}
	defer n.Close()
	c, err := inNS(n, wgctrl.New)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		have, lost := false, false
		// the client's netlink socket was opened in n and stays bound to it
		if d, err := c.Device(device); err == nil {
			for _, p := range d.Peers {
				k := wireguard.Key(p.PublicKey)
				have = have || k == want
				lost = lost || (gone != wireguard.Key{} && k == gone)
			}
		}
		if have && !lost {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's %s: key %s not in place after %s", h.Name, device, want, rotateBound)
		}
		time.Sleep(keyPoll)
	}
}

// inNS runs fn in n (a netlink socket opened there stays bound to it).
func inNS[T any](n ns.NetNS, fn func() (T, error)) (T, error) {
	var v T
	err := n.Do(func(ns.NetNS) error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}

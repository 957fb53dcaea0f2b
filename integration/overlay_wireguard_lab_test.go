package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/overlay/dataplane/planetest"
	"github.com/moornet/moor/overlay/wireguard"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/plugintest"
)

const (
	wgLabRange = "10.246.0.0/16"
	wgPort     = 51820
	wgMarker   = "moor-cleartext-marker-7f3a"
)

const labWireGuard = `
underlay: 172.31.12.0/24
networks:
  - {name: ov, subnet: ` + wgLabRange + `, vni: 42, dns: true, encryption: wireguard}
hosts:
  - {name: h1, containers: [c1]}
  - {name: h2, containers: [c2]}
`

// upWireGuardLab is upLab of labWireGuard with the start budget an emulated CPU needs.
func upWireGuardLab(t *testing.T) *lab.Lab { return upWireGuardLabSpec(t, labWireGuard) }

// upWireGuardLabSpec is upLab with the start budget an emulated CPU needs.
func upWireGuardLabSpec(t *testing.T, yaml string) *lab.Lab {
	t.Helper()
	if os.Getenv(plugintest.VMLaneEnv) == "1" {
		labStartBudget = 5 * time.Minute
		t.Cleanup(func() { labStartBudget = 0 })
	}
	return upLab(t, yaml)
}

// TestOverlayWireGuardLab: two hosts on an encrypted network. The underlay of both hosts
// is captured while the containers ping by name, talk TCP both ways and send a full-size
// packet with "do not fragment": no frame on the underlay carries a container address or
// the payload, and every frame but etcd's and ARP is UDP to or from the WireGuard port
// between the two host addresses. The private key stays in a root-only file and is found
// nowhere in etcd; the lease carries its public key. After a host restart (namespace
// gone, agent restarted) the key is the same; after --rotate-key every host uses the new
// one and traffic flows again. A lease with a wrong public key gets no traffic and is
// reported by the agent's status and the plugin's STATUS.
func TestOverlayWireGuardLab(t *testing.T) {
	plugintest.RequireKernel(t, plugintest.KernelWireGuard)
	l := upWireGuardLab(t)
	h1, _ := l.Host("h1")
	h2, _ := l.Host("h2")
	c1, _ := l.Container("c1")
	c2, _ := l.Container("c2")
	ip2 := c2.Attachments[0].IP
	mustReach(t, l, "c1", "c2", true)
	mustReach(t, l, "c2", "c1", true)

	// Keys: root-only file, public key in the lease, private key nowhere in etcd.
	key1 := hostKey(t, h1)
	own, _ := leaseOf(leases(t, l), h1.HostID)
	if own.PlaneType() != wireguard.PlaneType || own.Plane.PublicKey != key1.Public().String() || own.Plane.Endpoint.Port() != wgPort {
		t.Fatalf("h1's lease plane %+v, want wireguard with its public key %s", own.Plane, key1.Public())
	}
	if dump := etcdDump(t, l); strings.Contains(dump, key1.String()) || strings.Contains(dump, key2str(hostKey(t, h2))) {
		t.Fatal("a private key is in etcd")
	}
	if mtu := linkMTU(t, c1.Netns, "eth0"); mtu != 1500-60 {
		t.Fatalf("container MTU %d, want the underlay's 1500 minus 60", mtu)
	}

	// The capture.
	caps := []*capture{startCapture(t, h1.NetnsPath(), "eth0"), startCapture(t, h2.NetnsPath(), "eth0")}
	ctr1, ctr2 := containerNS(t, c1.Netns), containerNS(t, c2.Netns)
	echoTCP(t, ctr2, ":7777")
	echoTCP(t, ctr1, ":7777")
	mustReach(t, l, "c1", "c2", true)
	for _, x := range []struct {
		from ns.NetNS
		to   string
	}{{ctr1, ip2}, {ctr2, c1.Attachments[0].IP}} {
		got, err := talkTCP(x.from, net.JoinHostPort(x.to, "7777"), wgMarker)
		if err != nil || got != wgMarker {
			t.Fatalf("TCP to %s: %q, %v", x.to, got, err)
		}
	}
	if err := planetest.PingDF(ctr1, ip2, 1440-28); err != nil {
		t.Fatalf("a full-size packet does not cross: %v", err)
	}
	var frames [][]byte
	for _, c := range caps {
		frames = append(frames, c.stop()...)
	}
	checkUnderlay(t, frames, netip.MustParseAddr(h1.Underlay), netip.MustParseAddr(h2.Underlay))

	// h1's agent status is WireGuard-shaped: its own key and endpoint, and h2's peer as
	// the device holds it, with a handshake and both probes passed.
	l2, _ := leaseOf(leases(t, l), h2.HostID)
	st := wgStatus(t, h1, h2.HostID)
	if st.Plane != wireguard.PlaneType || st.PublicKey != key1.Public().String() || st.Endpoint != net.JoinHostPort(h1.Underlay, "51820") || st.VTEPMAC != "" {
		t.Fatalf("h1's network status %+v, want plane wireguard, its public key and endpoint, no VTEP MAC", st)
	}
	p := st.Peers[0].WireGuard
	pub2 := hostKey(t, h2).Public().String()
	if p.PublicKey != pub2 || p.Fingerprint != pub2[:8] || !p.InDevice || p.Endpoint != net.JoinHostPort(h2.Underlay, "51820") ||
		len(p.AllowedIPs) != 1 || p.AllowedIPs[0] != l2.Subnet.String() || p.LastHandshake == "" || p.RxBytes == 0 ||
		!p.Reachable || !p.FullSize || p.MTU != 1440 || p.Problem != "" {
		t.Fatalf("h1's peer h2 in status: %+v; want key %s in the device at %s:51820, allowed %s, a handshake, reachable at full size 1440", p, pub2, h2.Underlay, l2.Subnet)
	}

	// h2's lease carries a wrong public key: no traffic gets through, and h1's agent status
	// and the plugin's STATUS (what moor doctor runs) name h2 and the cause.
	restore := forgeKey(t, l, h2.HostID)
	if err := waitUntil(ovConverge, func() bool { return l.Ping("c1", netip.MustParseAddr(ip2)) != nil }); err != nil {
		t.Fatal("traffic still crosses to a host whose lease carries a wrong key")
	}
	st = wgStatus(t, h1, h2.HostID)
	if p := st.Peers[0].WireGuard; p.PublicKey == pub2 || p.Reachable || p.FullSize || !strings.Contains(p.Problem, "handshake") ||
		!strings.Contains(strings.Join(st.Problems, ";"), h2.HostID) {
		t.Fatalf("h1's agent status with h2's key forged: %+v, peer %+v; want h2 unreachable, the handshake named", st, p)
	}
	list, err := libcni.ConfListFromFile(mustConflist(t, l, "h1"))
	if err != nil {
		t.Fatal(err)
	}
	hostNS, err := ns.GetNS(h1.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	err = newRuntime(t, hostNS).status(list)
	hostNS.Close() // a namespace held open outlives the restart below
	if cniCode(err) != codes.LimitedConnectivity || !strings.Contains(err.Error(), h2.HostID) || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("STATUS with a wrong key: %v, want code %d naming %s and the handshake", err, codes.LimitedConnectivity, h2.HostID)
	}
	restore()
	mustReach(t, l, "c1", "c2", false)

	// Restart: same key, traffic flows.
	if err := l.RestartHost(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	if k := hostKey(t, h1); k != key1 {
		t.Fatal("h1's key changed across a restart")
	}
	mustReach(t, l, "c2", "c1", false)

	// Rotation: h1's agent takes a new key; h2 picks it up; traffic flows.
	conf, _ := l.ConflistPath("h1", ovNetwork)
	start := time.Now()
	out, err := exec.Command(filepath.Join(binDir, "moor-overlay"), "agent", "--rotate-key", "--listen", filepath.Join(h1.Dir, "agent.sock"), "--config", conf).CombinedOutput()
	if err != nil {
		t.Fatalf("--rotate-key: %v: %s", err, out)
	}
	key2 := hostKey(t, h1)
	if key2 == key1 {
		t.Fatal("the key file did not change")
	}
	if err := waitUntil(ovConverge, func() bool {
		return peerKeys(h2.NetnsPath())[key2.Public()] && !peerKeys(h2.NetnsPath())[key1.Public()]
	}); err != nil {
		t.Fatalf("h2 did not replace h1's peer with the new key: %v", err)
	}
	t.Logf("rotation converged on h2 in %s", time.Since(start).Round(time.Millisecond))
	mustReach(t, l, "c2", "c1", false)
	if n := len(peerKeys(h2.NetnsPath())); n != 1 {
		t.Fatalf("h2 has %d peers, want exactly one per other host", n)
	}
}

// wgStatus is host h's agent status of the lab's one network, whose one peer must be
// peer and carry a WireGuard section.
func wgStatus(t *testing.T, h *lab.Host, peer string) agent.NetworkStatus {
	t.Helper()
	st, err := agent.FetchStatus(h.AgentEndpoint())
	if err != nil || len(st.Networks) != 1 {
		t.Fatalf("%s's agent status %+v, %v", h.Name, st, err)
	}
	n := st.Networks[0]
	if len(n.Peers) != 1 || n.Peers[0].HostID != peer || n.Peers[0].WireGuard == nil || n.Peers[0].VTEPMAC != "" {
		t.Fatalf("%s's peers in status %+v, want %s with a WireGuard section and no VTEP MAC", h.Name, n.Peers, peer)
	}
	return n
}

// forgeKey replaces the public key in hostID's lease with another (keeping its etcd lease)
// and returns what puts the real one back.
func forgeKey(t *testing.T, l *lab.Lab, hostID string) func() {
	t.Helper()
	cli, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	resp, err := cli.Get(t.Context(), ovStorePref+"/"+ovNetwork+"/leases/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var doc map[string]any
		if json.Unmarshal(kv.Value, &doc) != nil || doc["hostID"] != hostID {
			continue
		}
		k, _ := wireguard.GenerateKey()
		plane, _ := doc["plane"].(map[string]any)
		if plane == nil {
			t.Fatalf("lease of %s has no plane data: %s", hostID, kv.Value)
		}
		plane["publicKey"] = k.Public().String()
		forged, _ := json.Marshal(doc)
		key, orig, id := string(kv.Key), string(kv.Value), clientv3.LeaseID(kv.Lease)
		put := func(v string) {
			var opts []clientv3.OpOption
			if id != 0 {
				opts = append(opts, clientv3.WithLease(id))
			}
			if _, err := cli.Put(context.Background(), key, v, opts...); err != nil {
				t.Fatal(err)
			}
		}
		put(string(forged))
		return func() { put(orig) }
	}
	t.Fatalf("no lease of %s", hostID)
	return nil
}

func key2str(k wireguard.Key) string { return k.String() }

// hostKey reads a lab host's private key and checks its file is root only.
func hostKey(t *testing.T, h *lab.Host) wireguard.Key {
	t.Helper()
	dir := filepath.Join(h.Dir, "state")
	fi, err := os.Stat(wireguard.KeyPath(dir, ovNetwork))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	k, err := wireguard.LoadKey(dir, ovNetwork)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// etcdDump is every key and value in the lab's etcd.
func etcdDump(t *testing.T, l *lab.Lab) string {
	t.Helper()
	cli, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		b.Write(kv.Key)
		b.Write(kv.Value)
	}
	if len(resp.Kvs) == 0 {
		t.Fatal("etcd holds nothing")
	}
	return b.String()
}

// peerKeys are the public keys of the WireGuard peers in a host's namespace.
func peerKeys(netnsPath string) map[wireguard.Key]bool {
	out := map[wireguard.Key]bool{}
	n, err := ns.GetNS(netnsPath)
	if err != nil {
		return out
	}
	defer n.Close()
	for _, k := range wireguardPeers(n, "moorwg42") {
		out[k] = true
	}
	return out
}

func containerNS(t *testing.T, name string) ns.NetNS {
	t.Helper()
	n, err := ns.GetNS(filepath.Join("/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func linkMTU(t *testing.T, netns, name string) int {
	t.Helper()
	rows, err := ipJSON(netns, "link", "show", name)
	if err != nil || len(rows) != 1 {
		t.Fatalf("link %s in %s: %v", name, netns, err)
	}
	mtu, _ := rows[0]["mtu"].(float64)
	return int(mtu)
}

// echoTCP answers every connection in netns on addr with what it reads, up to a newline.
func echoTCP(t *testing.T, netns ns.NetNS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(c, io.LimitReader(c, int64(len(wgMarker))))
			c.Close()
		}
	}()
}

// talkTCP sends msg from netns to addr and returns the answer.
func talkTCP(netns ns.NetNS, addr, msg string) (string, error) {
	var c net.Conn
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// capture records every frame on a link (AF_PACKET) until stop.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
	quit   chan struct{}
}

func startCapture(t *testing.T, netnsPath, link string) *capture {
	t.Helper()
	n, err := ns.GetNS(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c := &capture{done: make(chan struct{}), quit: make(chan struct{})}
	if err := n.Do(func(ns.NetNS) error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		return unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatalf("capturing on %s: %v", link, err)
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	go func() {
		defer close(c.done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.quit:
				return
			default:
			}
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil || n <= 0 {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) stop() [][]byte {
	select {
	case <-c.quit:
	default:
		close(c.quit)
		<-c.done
		unix.Close(c.fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// checkUnderlay asserts what may cross the underlay (see TestOverlayWireGuardLab).
func checkUnderlay(t *testing.T, frames [][]byte, hostA, hostB netip.Addr) {
	t.Helper()
	overlay := netip.MustParsePrefix(wgLabRange)
	wg := 0
	for i, f := range frames {
		if bytes.Contains(f, []byte(wgMarker)) {
			t.Fatalf("frame %d carries the payload in clear: % x", i, f)
		}
		if len(f) < 14 {
			continue
		}
		switch binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_ARP, unix.ETH_P_IPV6: // neighbour discovery of the underlay itself
			continue
		case unix.ETH_P_IP:
		default:
			t.Fatalf("frame %d of ethertype %#x on the underlay", i, binary.BigEndian.Uint16(f[12:14]))
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		src, _ := netip.AddrFromSlice(ip[12:16])
		dst, _ := netip.AddrFromSlice(ip[16:20])
		if overlay.Contains(src) || overlay.Contains(dst) {
			t.Fatalf("frame %d: %s -> %s, a container address on the underlay", i, src, dst)
		}
		proto := ip[9]
		var sport, dport uint16
		if (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_UDP) && len(ip) >= ihl+4 {
			sport, dport = binary.BigEndian.Uint16(ip[ihl:]), binary.BigEndian.Uint16(ip[ihl+2:])
		}
		if proto == unix.IPPROTO_TCP && (sport == 2379 || dport == 2379) {
			continue // the hosts' etcd clients
		}
		between := (src == hostA && dst == hostB) || (src == hostB && dst == hostA)
		if proto != unix.IPPROTO_UDP || !between || (sport != wgPort && dport != wgPort) {
			t.Fatalf("frame %d: %s:%d -> %s:%d protocol %d; only UDP on port %d between %s and %s may cross", i, src, sport, dst, dport, proto, wgPort, hostA, hostB)
		}
		wg++
	}
	if wg == 0 {
		t.Fatalf("no WireGuard packet among %d captured frames: the capture saw nothing", len(frames))
	}
	t.Logf("%d frames on the underlay, %d of them WireGuard", len(frames), wg)
}

// wireguardPeers are the peers' public keys of device in netns.
func wireguardPeers(netns ns.NetNS, device string) []wireguard.Key {
	var out []wireguard.Key
	_ = netns.Do(func(ns.NetNS) error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		d, err := c.Device(device)
		if err != nil {
			return err
		}
		for _, p := range d.Peers {
			out = append(out, wireguard.Key(p.PublicKey))
		}
		return nil
	})
	return out
}

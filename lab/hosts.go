package lab

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/overlay/agent"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/statefs"
)

// Host tuning.
const (
	underlayBridge   = "lab0"
	hostUplink       = "eth0"
	underlayMTU      = 1500
	agentReady       = 60 * time.Second
	serviceReadyPoll = 50 * time.Millisecond
	dnsReady         = 15 * time.Second
	overlayPrefix    = "/moor/overlay"
	dnsPrefix        = "/moor/dns"
	storeTimeout     = "3s"
	storeDial        = "1s"
	macLen           = 6
)

// makeUnderlay creates the lab's namespace with the underlay bridge and the router (and
// etcd member) addresses.
func (l *Lab) makeUnderlay() error {
	if err := addNetns(l.State.Netns); err != nil {
		return err
	}
	h, nsh, err := plugins.NetlinkAt(netnsPath(l.State.Netns))
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.Flags = underlayBridge, underlayMTU, net.FlagUp
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		return fmt.Errorf("creating %s: %w", underlayBridge, err)
	}
	br, err := h.LinkByName(underlayBridge)
	if err != nil {
		return err
	}
	u := mustPrefix(l.Spec.Underlay)
	addrs := []netip.Addr{topAddr(u, 1)}
	if l.Spec.Etcd.Members > 1 {
		for i := range l.Spec.Etcd.Members {
			addrs = append(addrs, topAddr(u, 2+i))
		}
	}
	for _, a := range addrs {
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(u.Bits(), 32)}}); err != nil {
			return fmt.Errorf("adding %s to %s: %w", a, underlayBridge, err)
		}
	}
	l.Router = topAddr(u, 1).String()
	return nil
}

// hostMAC is the fixed MAC of a host's underlay link, so that a re-made host keeps it and
// its peers' ARP entries stay right.
func hostMAC(lab, host string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("moor-lab\x00" + lab + "\x00" + host))
	mac := net.HardwareAddr(sum[:macLen])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// wireHost makes the host's namespace and its underlay link.
func (l *Lab) wireHost(h *Host) error {
	if err := addNetns(h.Netns); err != nil {
		return err
	}
	hns, err := os.Open(netnsPath(h.Netns))
	if err != nil {
		return err
	}
	defer hns.Close()
	lh, lnsh, err := plugins.NetlinkAt(netnsPath(l.State.Netns))
	if err != nil {
		return err
	}
	defer lnsh.Close()
	defer lh.Close()
	br, err := lh.LinkByName(underlayBridge)
	if err != nil {
		return err
	}
	// A re-made host: the old namespace is destroyed asynchronously, and the lab's end of
	// its link may still be there.
	if err := plugins.DeleteLinkByName(lh, "v-"+h.Name); err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: "v-" + h.Name, MTU: underlayMTU, MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
		PeerName:         hostUplink,
		PeerHardwareAddr: hostMAC(l.Name, h.Name),
		PeerNamespace:    netlink.NsFd(int(hns.Fd())),
		PeerMTU:          underlayMTU,
	}
	if err := lh.LinkAdd(veth); err != nil {
		return fmt.Errorf("underlay link of %s: %w", h.Name, err)
	}
	hh, hnsh, err := plugins.NetlinkAt(netnsPath(h.Netns))
	if err != nil {
		return err
	}
	defer hnsh.Close()
	defer hh.Close()
	up, err := hh.LinkByName(hostUplink)
	if err != nil {
		return err
	}
	u := mustPrefix(l.Spec.Underlay)
	a := netip.MustParseAddr(h.Underlay)
	if err := hh.AddrAdd(up, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(u.Bits(), 32)}}); err != nil {
		return err
	}
	if err := hh.LinkSetUp(up); err != nil {
		return err
	}
	return hh.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(l.Router)})
}

// bootHost wires the host, writes its conflists and starts its agent (and DNS sidecar).
func (l *Lab) bootHost(h *Host) error {
	if err := os.MkdirAll(h.Dir, dirMode); err != nil {
		return err
	}
	if err := l.wireHost(h); err != nil {
		return err
	}
	for _, n := range l.Spec.Networks {
		if err := os.WriteFile(l.conflistPath(h, n.Name), l.conflist(h, n), fileMode); err != nil {
			return err
		}
	}
	return l.startServices(h)
}

// env is what the host's processes and plugin calls get in their environment: the
// host's own run directory (MOOR_RUN_DIR) inside its directory. Without it they would keep
// their per-namespace volatile state (the DNS sidecar's firewall State, which its repair
// opens) under the machine's /run/moor/netns/<dev>-<ino>, where nothing removes it once
// Down deletes the namespace; inside the host's directory it goes with the lab.
func (h *Host) env() []string {
	return []string{statefs.EnvRunDir + "=" + h.RunDir()}
}

// RunDir is the host's run directory (MOOR_RUN_DIR of its processes and plugin calls),
// inside its directory.
func (h *Host) RunDir() string { return filepath.Join(h.Dir, "run") }

func (l *Lab) conflistPath(h *Host, network string) string {
	return filepath.Join(h.Dir, network+".conflist")
}

// startServices starts the host's agent and, when a network has DNS, its sidecar.
func (l *Lab) startServices(h *Host) error {
	args := []string{"agent", "--listen", filepath.Join(h.Dir, "agent.sock"), "--resync", l.Spec.Agent.Resync,
		"--log-file", filepath.Join(h.Dir, "agent.log")}
	for _, n := range l.Spec.Networks {
		args = append(args, "--config", l.conflistPath(h, n.Name))
	}
	p, err := start(h.Netns, filepath.Join(h.Dir, "agent.out"), h.env(), filepath.Join(l.BinDir, "moor-overlay"), args...)
	if err != nil {
		return err
	}
	l.mu.Lock()
	h.Agent = p
	l.mu.Unlock()
	if !l.Spec.anyDNS() {
		return nil
	}
	dnsArgs := []string{"serve", "--store", "etcd", "--etcd-prefix", dnsPrefix, "--etcd-host", h.HostID,
		"--etcd-timeout", l.storeTimeouts()[0],
		"--store-dir", filepath.Join(h.Dir, "dns"), "--control-socket", filepath.Join(h.Dir, "dns.sock"),
		"--pid-file", filepath.Join(h.Dir, "dns.pid"), "--idle-timeout", "-1s", "--log-file", filepath.Join(h.Dir, "dns.log")}
	for _, ep := range l.Endpoints() {
		dnsArgs = append(dnsArgs, "--etcd-endpoint", ep)
	}
	p, err = start(h.Netns, filepath.Join(h.Dir, "dns.out"), h.env(), filepath.Join(l.BinDir, "moor-dns"), dnsArgs...)
	if err != nil {
		return err
	}
	l.mu.Lock()
	h.DNS = p
	l.mu.Unlock()
	sock := filepath.Join(h.Dir, "dns.sock")
	return waitFor(max(dnsReady, l.StartBudget), "DNS sidecar of "+h.Name, func() bool { return server.Healthy(sock) }, h.DNS)
}

// waitFor polls ok until it holds, the process dies, or the timeout passes.
func waitFor(timeout time.Duration, what string, ok func() bool, p Proc) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if !p.Alive() {
			out, _ := os.ReadFile(p.Log)
			return fmt.Errorf("%s exited: %s", what, tail(string(out)))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", what, timeout)
		}
		time.Sleep(serviceReadyPoll)
	}
	return nil
}

// waitAgents waits for every given host's agent to have synced all its networks.
func (l *Lab) waitAgents(_ context.Context, hosts []*Host) error {
	var wg sync.WaitGroup
	errs := make([]error, len(hosts))
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sock := filepath.Join(h.Dir, "agent.sock")
			errs[i] = waitFor(max(agentReady, l.StartBudget), "agent of "+h.Name, func() bool { return agent.Healthy(sock, "") }, h.Agent)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// storeTimeouts are the request and dial timeouts of the hosts' etcd clients: longer with
// a StartBudget, since every etcd request is slow on an emulated CPU.
func (l *Lab) storeTimeouts() [2]string {
	if l.StartBudget > 0 {
		return [2]string{"30s", "10s"}
	}
	return [2]string{storeTimeout, storeDial}
}

// conflist is the CNI config list of network n on host h.
func (l *Lab) conflist(h *Host, n NetworkSpec) []byte {
	st := l.storeTimeouts()
	store := map[string]any{"endpoints": l.Endpoints(), "prefix": overlayPrefix, "requestTimeout": st[0], "dialTimeout": st[1]}
	plugins := []map[string]any{{
		"type":          "moor-overlay",
		"subnet":        n.Subnet,
		"hostSubnetLen": n.HostSubnetLen,
		"vni":           n.VNI,
		"underlay":      hostUplink,
		"ipMasq":        n.IPMasq,
		"directRouting": n.DirectRouting,
		"hostID":        h.HostID,
		"leaseTTL":      n.LeaseTTL,
		"agentSocket":   filepath.Join(h.Dir, "agent.sock"),
		"store":         store,
		"ipam":          map[string]any{"type": "moor-ipam", "dataDir": filepath.Join(h.Dir, "ipam")},
		"logFile":       filepath.Join(h.Dir, "plugins.log"),
	}}
	if n.ICC != nil {
		plugins[0]["icc"] = *n.ICC
	}
	if n.Internal {
		plugins[0]["internal"] = true
	}
	if n.Encryption != "" {
		plugins[0]["encryption"] = n.Encryption
		plugins[0]["stateDir"] = filepath.Join(h.Dir, "state")
	}
	if n.DNS {
		plugins = append(plugins, map[string]any{
			"type":          "moor-dns",
			"storeDir":      filepath.Join(h.Dir, "dns"),
			"controlSocket": filepath.Join(h.Dir, "dns.sock"),
			"pidFile":       filepath.Join(h.Dir, "dns.pid"),
			"idleTimeout":   "-1s",
			"capabilities":  map[string]any{"aliases": true},
			"logFile":       filepath.Join(h.Dir, "plugins.log"),
			"store": map[string]any{"type": "etcd", "endpoints": l.Endpoints(), "prefix": dnsPrefix, "host": h.HostID,
				"requestTimeout": st[0], "dialTimeout": st[1]},
		})
	}
	data, _ := json.MarshalIndent(map[string]any{"cniVersion": "1.1.0", "name": n.Name, "plugins": plugins}, "", "  ")
	return data
}

// LeaveHost makes the host leave every network (`moor-overlay agent --leave`, which asks
// its running agent to release the leases and stop) and waits for the agent to exit.
func (l *Lab) LeaveHost(ctx context.Context, name string) error {
	h, err := l.host(name)
	if err != nil {
		return err
	}
	args := []string{"agent", "--leave", "--listen", filepath.Join(h.Dir, "agent.sock")}
	for _, n := range l.Spec.Networks {
		args = append(args, "--config", l.conflistPath(h, n.Name))
	}
	var out []byte
	err = inNetns(h.Netns, func() error {
		var err error
		out, err = exec.CommandContext(ctx, filepath.Join(l.BinDir, "moor-overlay"), args...).CombinedOutput()
		return err
	})
	if err != nil {
		return fmt.Errorf("leave %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	h.Agent.Stop() // it exits by itself after leaving; this reaps it
	l.mu.Lock()
	h.Left = true
	l.mu.Unlock()
	return l.save()
}

// RestartHost simulates a reboot: the host's agent and sidecar are killed, its namespace
// (VXLAN device, bridge, veths, routes) deleted and made again, the services started and
// its containers attached again (DEL from the runtime's cache, then ADD).
func (l *Lab) RestartHost(ctx context.Context, name string) error {
	h, err := l.host(name)
	if err != nil {
		return err
	}
	h.Agent.Kill()
	h.DNS.Kill()
	if err := delNetns(h.Netns); err != nil {
		return err
	}
	if err := l.wireHost(h); err != nil {
		return err
	}
	if err := l.startServices(h); err != nil {
		return err
	}
	if err := l.waitAgents(ctx, []*Host{h}); err != nil {
		return err
	}
	for i := range l.Containers {
		if l.Containers[i].Host != name {
			continue
		}
		if err := l.reattach(ctx, &l.Containers[i]); err != nil {
			return err
		}
	}
	return l.save()
}

// AddHost adds a host to a running lab and starts its agent. With wait, it returns once
// the agent has synced.
func (l *Lab) AddHost(ctx context.Context, name string, wait bool) (*Host, error) {
	if _, err := l.host(name); err == nil {
		return nil, fmt.Errorf("lab %s already has a host %q", l.Name, name)
	}
	spec := l.Spec
	spec.Hosts = append(append([]HostSpec(nil), spec.Hosts...), HostSpec{Name: name})
	if err := spec.check(); err != nil {
		return nil, err
	}
	h := &Host{Name: name, HostID: l.Name + "-" + name, Netns: l.Name + "." + name,
		Underlay: underlayAddr(mustPrefix(spec.Underlay), len(l.Hosts)).String(), Dir: filepath.Join(l.Dir, "hosts", name)}
	l.mu.Lock()
	l.Spec = spec
	l.Hosts = append(l.Hosts, h)
	l.mu.Unlock()
	if err := l.save(); err != nil {
		return h, err
	}
	if err := l.bootHost(h); err != nil {
		return h, err
	}
	if err := l.save(); err != nil {
		return h, err
	}
	if wait {
		return h, l.waitAgents(ctx, []*Host{h})
	}
	return h, nil
}

// StopEtcd stops every etcd member (their data stays).
func (l *Lab) StopEtcd() { l.stopEtcd() }

// StartEtcd starts the members again on their data and waits for a quorum.
func (l *Lab) StartEtcd(ctx context.Context) error {
	if err := l.startEtcd(ctx); err != nil {
		return err
	}
	return l.save()
}

// Host returns the named host.
func (l *Lab) Host(name string) (*Host, error) { return l.host(name) }

// AgentEndpoint is the host's agent control socket.
func (h *Host) AgentEndpoint() string { return filepath.Join(h.Dir, "agent.sock") }

// NetnsPath is the path of the host's network namespace.
func (h *Host) NetnsPath() string { return netnsPath(h.Netns) }

// ConflistPath is the host's conflist of a network.
func (l *Lab) ConflistPath(host, network string) (string, error) {
	h, err := l.host(host)
	if err != nil {
		return "", err
	}
	return l.conflistPath(h, network), nil
}

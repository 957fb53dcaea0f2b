package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Names and addresses shared by every suite. Each suite run has its own private host
// netns, so every run can use the same ones.
const (
	cniVersion   = "1.0.0" // the newest the reference 1.1.1 plugins speak
	networkName  = "moorbench"
	bridgeName   = "moorbbr0"
	subnet       = "10.231.0.0/16"
	ifName       = "eth0"
	hostPortBase = 20000 // container i publishes hostPortBase+i -> 80/tcp
	ctrPort      = 80
)

// Suite names.
const (
	sRefLoopback   = "ref-loopback"
	sMoorNone      = "moor-none"
	sRefBridge     = "ref-bridge"
	sMoorBridge    = "moor-bridge"
	sRefPortmap    = "ref-bridge-portmap"
	sMoorPorts     = "moor-bridge-ports"
	sMoorPortsIPT  = "moor-bridge-ports-ipt"
	sFloor         = "phys-netlink"
	sRefDefault    = "ref-default"
	sMoorDefault   = "moor-default"
	sRefMacvlan    = "ref-macvlan"
	sMoorMacvlan   = "moor-macvlan"
	sRefHostLocal  = "ref-host-local"
	sMoorIPAM      = "moor-ipam"
	sMoorIPAMEtcd  = "moor-ipam-etcd"
	sRefBandwidth  = "ref-bridge-bandwidth"
	sMoorBandwidth = "moor-bridge-bandwidth"
	moorBinPrefix  = "moor-"
	refHostLocal   = "host-local"
	moorIPAMBinary = "moor-ipam"
)

var defaultLatencySuites = []string{sRefLoopback, sMoorNone, sRefBridge, sMoorBridge, sRefPortmap, sMoorPorts, sRefDefault, sMoorDefault, sRefBandwidth, sMoorBandwidth, sFloor}

// pair is a ratio the report computes: moor (or the floor) over the reference.
type pair struct{ num, den string }

var latencyPairs = []pair{
	{sMoorBridge, sRefBridge},
	{sMoorPorts, sRefPortmap},
	{sMoorPortsIPT, sRefPortmap},
	{sMoorDefault, sRefDefault},
	{sMoorNone, sRefLoopback},
	{sFloor, sRefBridge},
	{sMoorBridge, sFloor},
	{sMoorBandwidth, sRefBandwidth},
}

// driver performs one suite's ADD and DEL for container i. Methods are called from a
// goroutine whose thread is in the run's host netns, concurrently for several workers.
type driver interface {
	add(ctx context.Context, i int, ctr ns.NetNS) (sample, error)
	del(ctx context.Context, i int, ctr ns.NetNS) (sample, error)
}

// runEnv is what a suite run gets: its private host netns, a fresh directory for IPAM
// state and libcni's cache, and the plugin search path.
type runEnv struct {
	lab  *lab
	host ns.NetNS
	data string
	path []string
	exec timedExec
}

// suite is one way of attaching containers.
type suite struct {
	name  string
	desc  string
	needs []string // binaries; moor-* are looked up in -bin, others in -ref
	start func(env *runEnv) (driver, error)
}

// binPath is where binary name is looked for: moor-* in -bin, the rest in -ref.
func (o *options) binPath(name string) string {
	if strings.HasPrefix(name, moorBinPrefix) {
		return filepath.Join(o.MoorBin, name)
	}
	return filepath.Join(o.RefBin, name)
}

// missing says which binary the suite lacks, or "".
func (s suite) missing(o *options) string {
	for _, b := range s.needs {
		p := o.binPath(b)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return fmt.Sprintf("%s not found in %s", b, filepath.Dir(p))
		}
	}
	return ""
}

var suites = map[string]suite{}

func register(s suite) { suites[s.name] = s }

func latencySuiteNames() []string {
	return []string{sRefLoopback, sMoorNone, sRefBridge, sMoorBridge, sRefPortmap, sMoorPorts, sMoorPortsIPT, sRefDefault, sMoorDefault, sFloor, sRefBandwidth, sMoorBandwidth}
}

func init() {
	hostLocal := func(env *runEnv) map[string]any {
		return map[string]any{"type": refHostLocal, "ranges": [][]map[string]any{{{"subnet": subnet}}}, "dataDir": env.data}
	}
	moorIPAM := func(env *runEnv) map[string]any {
		m := hostLocal(env)
		m["type"] = moorIPAMBinary
		return m
	}
	bridge := func(typ string, ipam map[string]any, masq bool) map[string]any {
		return map[string]any{"type": typ, "bridge": bridgeName, "isGateway": true, "ipMasq": masq, "ipam": ipam}
	}
	chain := func(plugins ...map[string]any) []map[string]any { return plugins }

	register(suite{name: sRefLoopback, desc: "reference `loopback`", needs: []string{"loopback"},
		start: cniChain(func(*runEnv) []map[string]any { return chain(map[string]any{"type": "loopback"}) }, nil)})
	register(suite{name: sMoorNone, desc: "`moor-none` (lo up)", needs: []string{"moor-none"},
		start: cniChain(func(*runEnv) []map[string]any { return chain(map[string]any{"type": "moor-none"}) }, nil)})
	register(suite{name: sRefBridge, desc: "reference `bridge` + `host-local`", needs: []string{"bridge", refHostLocal},
		start: cniChain(func(e *runEnv) []map[string]any { return chain(bridge("bridge", hostLocal(e), false)) }, nil)})
	register(suite{name: sMoorBridge, desc: "`moor-bridge` + `moor-ipam` (in process)", needs: []string{"moor-bridge"},
		start: cniChain(func(e *runEnv) []map[string]any { return chain(bridge("moor-bridge", moorIPAM(e), false)) }, nil)})
	register(suite{name: sRefPortmap, desc: "reference `bridge` (ipMasq) + `host-local` + `portmap` (iptables), 1 port each",
		needs: []string{"bridge", refHostLocal, "portmap"},
		start: cniChain(func(e *runEnv) []map[string]any {
			return chain(bridge("bridge", hostLocal(e), true), map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
		}, portMapping)})
	moorPorts := func(backend string) func(e *runEnv) []map[string]any {
		return func(e *runEnv) []map[string]any {
			b := bridge("moor-bridge", moorIPAM(e), true)
			b["capabilities"] = map[string]bool{"portMappings": true}
			if backend != "" {
				b["firewallBackend"] = backend
			}
			return chain(b)
		}
	}
	register(suite{name: sMoorPorts, desc: "`moor-bridge` (ipMasq, portMappings; nftables) + `moor-ipam`, 1 port each",
		needs: []string{"moor-bridge"}, start: cniChain(moorPorts(""), portMapping)})
	register(suite{name: sMoorPortsIPT, desc: "`moor-bridge` (ipMasq, portMappings; `firewallBackend: iptables`) + `moor-ipam`",
		needs: []string{"moor-bridge"}, start: cniChain(moorPorts("iptables"), portMapping)})
	// Shaping: both directions limited per container (tbf, and an ifb for egress).
	register(suite{name: sRefBandwidth, desc: "reference `bridge` + `host-local` + `bandwidth`, both directions shaped",
		needs: []string{"bridge", refHostLocal, "bandwidth"},
		start: cniChain(func(e *runEnv) []map[string]any {
			return chain(bridge("bridge", hostLocal(e), false), map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
		}, shapingLimits)})
	register(suite{name: sMoorBandwidth, desc: "`moor-bridge` (bandwidth capability, both directions shaped) + `moor-ipam`",
		needs: []string{"moor-bridge"},
		start: cniChain(func(e *runEnv) []map[string]any {
			b := bridge("moor-bridge", moorIPAM(e), false)
			b["capabilities"] = map[string]bool{"bandwidth": true}
			return chain(b)
		}, shapingLimits)})
	// The default chains: what `moor network create` writes (a bridge with isolation,
	// masquerade and published ports, then moor-dns, whose ADD returns once the sidecar
	// answers for the name) against what podman 4 writes for the reference plugins.
	register(suite{name: sRefDefault, desc: "reference `bridge` (ipMasq) + `host-local` + `portmap` + `firewall` + `tuning` + `dnsname` (podman 4's chain), 1 port each",
		needs: []string{"bridge", refHostLocal, "portmap", "firewall", "tuning", "dnsname"},
		start: cniChain(func(e *runEnv) []map[string]any {
			b := bridge("bridge", hostLocal(e), true)
			b["isDefaultGateway"], b["hairpinMode"] = true, true
			return chain(b, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
				map[string]any{"type": "firewall"}, map[string]any{"type": "tuning"},
				map[string]any{"type": "dnsname", "domainName": "dns.podman", "capabilities": map[string]bool{"aliases": true}})
		}, portMapping)})
	register(suite{name: sMoorDefault, desc: "`moor-bridge` (isolation, ipMasq, portMappings) + `moor-dns` (`moor network create`'s chain), 1 port each",
		needs: []string{"moor-bridge", "moor-dns"}, start: withSidecar(cniChain(func(e *runEnv) []map[string]any {
			b := bridge("moor-bridge", moorIPAM(e), true)
			b["isDefaultGateway"] = true
			b["capabilities"] = map[string]bool{"portMappings": true, "ips": true}
			return chain(b, moorDNS(e))
		}, portMapping))})
	register(suite{name: sFloor, desc: "in-process netlink, no exec (the floor; IPv6 off on the container end before it goes up, as moor does on an IPv4-only network)", start: startFloor})

	macvlan := func(typ string, ipam func(*runEnv) map[string]any) func(e *runEnv) []map[string]any {
		return func(e *runEnv) []map[string]any {
			return chain(map[string]any{"type": typ, "master": macvlanParent, "mode": "bridge", "ipam": ipam(e)})
		}
	}
	register(suite{name: sRefMacvlan, desc: "reference `macvlan` + `host-local`", needs: []string{"macvlan", refHostLocal},
		start: withParent(cniChain(macvlan("macvlan", hostLocal), nil))})
	register(suite{name: sMoorMacvlan, desc: "`moor-macvlan` + `moor-ipam`", needs: []string{"moor-macvlan"},
		start: withParent(cniChain(macvlan("moor-macvlan", moorIPAM), nil))})
}

// portMapping is container i's one published port.
func portMapping(i int) map[string]any {
	return map[string]any{"portMappings": []map[string]any{{"hostPort": hostPortBase + i, "containerPort": ctrPort, "protocol": "tcp"}}}
}

// shapingLimits are container i's bandwidth limits: 10 Mbit/s in, 20 Mbit/s out.
func shapingLimits(int) map[string]any {
	return map[string]any{"bandwidth": map[string]any{
		"ingressRate": 10_000_000, "ingressBurst": 512_000, "egressRate": 20_000_000, "egressBurst": 512_000}}
}

// cniDriver runs a conflist through libcni.
type cniDriver struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	caps func(i int) map[string]any
}

// cniChain builds a suite start func for the conflist plugins(env) with optional
// per-container capability args.
func cniChain(plugins func(*runEnv) []map[string]any, caps func(int) map[string]any) func(*runEnv) (driver, error) {
	return func(env *runEnv) (driver, error) {
		raw, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": networkName, "plugins": plugins(env)})
		if err != nil {
			return nil, err
		}
		list, err := libcni.ConfListFromBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("conflist: %w", err)
		}
		return &cniDriver{
			cni:  libcni.NewCNIConfigWithCacheDir(env.path, filepath.Join(env.data, "cache"), env.exec),
			list: list,
			caps: caps,
		}, nil
	}
}

// containerID is container i's ID, shaped like a runtime's: 64 hex digits whose first 12
// (the short ID, which moor-dns registers as a name) differ between containers. IDs that
// shared their first 12 characters made every container of a run answer to one shared
// DNS name, so the default chain's ADD served an ever longer answer and re-indexed the
// network on every ADD: a cost no runtime's IDs produce.
func containerID(i int) string {
	const mask = 1<<48 - 1
	// An odd multiplier mod 2^48 is a bijection: distinct i give distinct short IDs.
	return fmt.Sprintf("%012x%052x", uint64(i)*0x9e3779b97f4b&mask, i)
}

func (d *cniDriver) rt(i int, ctr ns.NetNS) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: containerID(i), NetNS: ctr.Path(), IfName: ifName}
	if d.caps != nil {
		rt.CapabilityArgs = d.caps(i)
	}
	return rt
}

func (d *cniDriver) add(ctx context.Context, i int, ctr ns.NetNS) (sample, error) {
	t := newTimer()
	_, err := d.cni.AddNetworkList(withTimer(ctx, t), d.list, d.rt(i, ctr))
	return t.sample(), err
}

func (d *cniDriver) del(ctx context.Context, i int, ctr ns.NetNS) (sample, error) {
	t := newTimer()
	err := d.cni.DelNetworkList(withTimer(ctx, t), d.list, d.rt(i, ctr))
	return t.sample(), err
}

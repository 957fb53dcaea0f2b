// Package lab builds multi-host overlay labs on one machine, for `moor lab up/status/down`
// and for tests: every host is a network namespace with its own address on a shared
// underlay bridge, which lives in the lab's own namespace (never the machine's); the lab
// runs etcd (one member, or three) in that namespace, and in every host's namespace the
// overlay agent and, when a network has DNS, the DNS sidecar; containers are namespaces
// attached through libcni with the binaries of a bin directory.
//
// Layout, for a lab named L with hosts H and containers C:
//
//	netns L.lab          bridge lab0 with the router address (top of the underlay subnet)
//	                     and etcd (one member on the router address, or three below it)
//	netns L.H            eth0 on the underlay (fixed MAC, address network+i), default
//	                     route via the router; moor-overlay agent; moor-dns serve
//	netns L.H.C          the container, attached by ADD of each network's conflist
//	<root>/L/            state.json (what was made: namespaces, PIDs, addresses), etcd
//	                     data, and per host the conflists, IPAM store, DNS store, libcni
//	                     cache, sockets, logs and the run directory (MOOR_RUN_DIR) of its
//	                     processes and plugin calls
//
// Down removes exactly what the state file names: it stops the processes by PID (checking
// their start time, so a reused PID is never signalled), deletes the namespaces (links,
// routes and nftables tables go with them) and the lab directory (etcd data included).
// Up writes the state after every step, and on failure runs Down itself.
//
// Operations for tests and demos: RestartHost (the host's processes and namespace torn
// down and made again, containers re-attached), LeaveHost (`moor-overlay agent --leave`),
// AddHost, StopEtcd/StartEtcd, Ping and Resolve from a container, Status with a
// connectivity matrix by name.
//
// What it does not do: touch the machine's own interfaces, routes or firewall, or install
// binaries (BinDir must hold moor-overlay, moor-dns and moor-ipam).
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Defaults of Options.
const (
	DefaultRoot   = "/run/moor/lab"
	DefaultBinDir = "/opt/cni/bin"
)

// Options say where a lab keeps its state and finds its binaries.
type Options struct {
	// Root holds one directory per lab (DefaultRoot when empty).
	Root string
	// BinDir holds the CNI plugins (DefaultBinDir when empty).
	BinDir string
	// EtcdBinary is etcd (DefaultEtcdBinary when empty).
	EtcdBinary string
	// Progress receives one line per step while Up builds (nil: quiet).
	Progress io.Writer
	// StartBudget, when longer, replaces the deadlines for etcd, the agents and the DNS
	// sidecars to get ready (30 s, 60 s, 15 s): an emulated CPU (the VM test lane) starts
	// them far slower.
	StartBudget time.Duration
}

func (o Options) withDefaults() Options {
	if o.Root == "" {
		o.Root = DefaultRoot
	}
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir
	}
	if o.EtcdBinary == "" {
		o.EtcdBinary = DefaultEtcdBinary
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Lab is a lab that is up (or partly up).
type Lab struct {
	*State
	progress io.Writer
}

// ErrExists is returned by Up for a lab whose state directory exists.
var ErrExists = errors.New("lab is already up (run down first)")

// Up builds the lab spec describes. On failure everything made so far is removed.
func Up(ctx context.Context, spec *Spec, opts Options) (l *Lab, err error) {
	opts = opts.withDefaults()
	if err := spec.check(); err != nil {
		return nil, err
	}
	for _, bin := range []string{filepath.Join(opts.BinDir, "moor-overlay"), opts.EtcdBinary} {
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("lab needs %s: %w", bin, err)
		}
	}
	dir := stateDir(opts.Root, spec.Name)
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, dir)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, err
	}
	st := &State{Name: spec.Name, Dir: dir, BinDir: opts.BinDir, Etcd: opts.EtcdBinary, Spec: *spec, Netns: spec.Name + ".lab", StartBudget: opts.StartBudget}
	l = &Lab{State: st, progress: opts.Progress}
	began := time.Now()
	defer func() {
		if err != nil {
			l.step("cleaning up after the failure", func() error { return l.Down(context.Background()) })
		}
	}()
	if err := st.save(); err != nil {
		return l, err
	}
	if err := l.step(fmt.Sprintf("underlay %s in netns %s", spec.Underlay, st.Netns), l.makeUnderlay); err != nil {
		return l, err
	}
	st.planEtcd(filepath.Join(dir, "etcd"))
	if err := l.step(fmt.Sprintf("etcd (%d member(s)) at %s", len(st.Members), st.Members[0].ClientURL), func() error { return st.startEtcd(ctx) }); err != nil {
		return l, err
	}
	for i := range spec.Hosts {
		h := &Host{Name: spec.Hosts[i].Name, HostID: spec.Name + "-" + spec.Hosts[i].Name, Netns: spec.Name + "." + spec.Hosts[i].Name,
			Underlay: underlayAddr(mustPrefix(spec.Underlay), i).String(), Dir: filepath.Join(dir, "hosts", spec.Hosts[i].Name)}
		st.Hosts = append(st.Hosts, h)
		if err := l.step(fmt.Sprintf("host %s (%s): netns, agent%s", h.Name, h.Underlay, dnsWord(spec)), func() error { return l.bootHost(h) }); err != nil {
			return l, err
		}
	}
	if err := l.step(fmt.Sprintf("%d agent(s) synced", len(st.Hosts)), func() error { return l.waitAgents(ctx, st.Hosts) }); err != nil {
		return l, err
	}
	for _, hs := range spec.Hosts {
		for _, c := range hs.Containers {
			if err := l.step(fmt.Sprintf("container %s on %s", c.Name, hs.Name), func() error { return l.addContainer(ctx, hs.Name, c) }); err != nil {
				return l, err
			}
		}
	}
	fmt.Fprintf(l.progress, "lab %s is up in %s (state %s)\n", st.Name, time.Since(began).Round(time.Millisecond), dir)
	return l, nil
}

func dnsWord(s *Spec) string {
	if s.anyDNS() {
		return ", DNS"
	}
	return ""
}

// step runs fn and reports it on the progress writer.
func (l *Lab) step(what string, fn func() error) error {
	fmt.Fprintf(l.progress, "lab %s: %s ... ", l.Name, what)
	began := time.Now()
	err := fn()
	if err != nil {
		fmt.Fprintf(l.progress, "FAILED: %v\n", err)
		return err
	}
	fmt.Fprintf(l.progress, "ok (%s)\n", time.Since(began).Round(time.Millisecond))
	return l.save()
}

// Open returns the lab named name from its state file.
func Open(name string, opts Options) (*Lab, error) {
	opts = opts.withDefaults()
	st, err := loadState(stateDir(opts.Root, name))
	if err != nil {
		return nil, err
	}
	return &Lab{State: st, progress: opts.Progress}, nil
}

// Down stops every process and deletes every namespace and the lab directory. It keeps
// going when a step fails and returns the failures joined. Repeatable.
func (l *Lab) Down(context.Context) error {
	var errs []error
	for _, c := range l.Containers {
		errs = append(errs, delNetns(c.Netns))
	}
	for _, h := range l.Hosts {
		h.Agent.Stop()
		h.DNS.Stop()
		errs = append(errs, delNetns(h.Netns))
	}
	l.stopEtcd()
	errs = append(errs, delNetns(l.State.Netns))
	if err := os.RemoveAll(l.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func mustPrefix(s string) netip.Prefix {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		panic(fmt.Sprintf("lab: checked prefix %q does not parse: %v", s, err))
	}
	return p
}

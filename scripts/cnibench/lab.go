package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// Netns name prefixes: the plugins' private host, and containers. Every name also carries
// the run's random id, so concurrent runs (a smoke test beside a benchmark) never meet.
const (
	hostPrefix = "moorbh"
	ctrPrefix  = "moorbc"
)

// lab owns everything a run creates: named network namespaces, a temp directory and
// processes (etcd). Close removes all of it; it is safe to call from any goroutine and
// more than once.
type lab struct {
	id  string
	tmp string

	mu    sync.Mutex
	seq   int
	netns map[string]ns.NetNS // by path
	procs map[int]*exec.Cmd   // by PID
}

func newLab() (*lab, error) {
	id := plugintest.RandomSuffix()
	tmp, err := os.MkdirTemp("", "moorbench-"+id+"-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	return &lab{id: id, tmp: tmp, netns: map[string]ns.NetNS{}, procs: map[int]*exec.Cmd{}}, nil
}

// newNetns creates a named netns <prefix>-<run id>-<n> with lo up.
func (l *lab) newNetns(prefix string) (ns.NetNS, error) {
	l.mu.Lock()
	l.seq++
	name := fmt.Sprintf("%s-%s-%d", prefix, l.id, l.seq)
	l.mu.Unlock()
	h, err := plugintest.NewNamedNetns(name)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.netns[h.Path()] = h
	l.mu.Unlock()
	err = h.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bringing lo up in %s: %w", name, err), l.dropNetns(h))
	}
	return h, nil
}

// newHost is a fresh private netns for the plugins' host side.
func (l *lab) newHost() (ns.NetNS, error) { return l.newNetns(hostPrefix) }

// newContainers creates n container netns; on failure it removes those it made.
func (l *lab) newContainers(n int) ([]ns.NetNS, error) {
	out := make([]ns.NetNS, 0, n)
	for i := 0; i < n; i++ {
		h, err := l.newNetns(ctrPrefix)
		if err != nil {
			return nil, errors.Join(err, l.dropAll(out))
		}
		out = append(out, h)
	}
	return out, nil
}

// dropNetns removes one namespace (the kernel tears down what is in it, asynchronously).
func (l *lab) dropNetns(h ns.NetNS) error {
	l.mu.Lock()
	delete(l.netns, h.Path())
	l.mu.Unlock()
	return plugintest.DeleteNetns(h)
}

func (l *lab) dropAll(hs []ns.NetNS) error {
	var errs []error
	for _, h := range hs {
		if err := l.dropNetns(h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dir makes a fresh directory under the lab's temp dir.
func (l *lab) dir(name string) (string, error) {
	return os.MkdirTemp(l.tmp, name+"-")
}

// track registers a started process; Close kills it by PID.
func (l *lab) track(c *exec.Cmd) {
	l.mu.Lock()
	l.procs[c.Process.Pid] = c
	l.mu.Unlock()
}

// stop kills a tracked process and reaps it.
func (l *lab) stop(c *exec.Cmd) {
	l.mu.Lock()
	_, ok := l.procs[c.Process.Pid]
	delete(l.procs, c.Process.Pid)
	l.mu.Unlock()
	if ok {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

// Close kills the processes, removes every namespace still registered (containers
// first, so their veth peers go before the hosts' bridges) and the temp dir.
func (l *lab) Close() error {
	l.mu.Lock()
	procs := make([]*exec.Cmd, 0, len(l.procs))
	for _, c := range l.procs {
		procs = append(procs, c)
	}
	var hs []ns.NetNS
	for _, h := range l.netns {
		hs = append(hs, h)
	}
	l.mu.Unlock()
	for _, c := range procs {
		l.stop(c)
	}
	sort.Slice(hs, func(i, j int) bool { return filepath.Base(hs[i].Path()) < filepath.Base(hs[j].Path()) })
	errs := []error{l.dropAll(hs)}
	if err := os.RemoveAll(l.tmp); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// leftovers lists the run's namespaces still bound under /run/netns (for the smoke test
// and a last check).
func (l *lab) leftovers() ([]string, error) {
	ents, err := os.ReadDir(plugintest.NetnsDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, e := range ents {
		for _, p := range []string{hostPrefix, ctrPrefix} {
			if strings.HasPrefix(e.Name(), p+"-"+l.id+"-") {
				out = append(out, e.Name())
			}
		}
	}
	return out, nil
}

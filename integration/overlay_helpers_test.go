package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/lab"
	"github.com/moornet/moor/overlay/lease"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/plugintest"
	"github.com/moornet/moor/plugins/statefs"
)

// Overlay labs in tests: every lab is named moorov-<random> (its namespaces are
// moorov-<random>.*), keeps its state in a fresh directory, and is taken down (processes by
// PID, namespaces, etcd data) when the test ends, also when it fails.
const (
	ovNetwork   = "ov"
	ovVNI       = 42
	ovVXLAN     = "moorvx42"
	ovBridge    = "moorov42"
	ovConverge  = 30 * time.Second // bound for agents to converge after a change
	ovPoll      = 100 * time.Millisecond
	ovStorePref = "/moor/overlay"
)

// testWriter sends the lab's progress to the test log, a line at a time.
type testWriter struct {
	t    *testing.T
	line []byte
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.line = append(w.line, p...)
	for {
		i := strings.IndexByte(string(w.line), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(string(w.line[:i]))
		w.line = w.line[i+1:]
	}
}

// labStartBudget is lab.Options.StartBudget for upLab (0: the lab's defaults).
var labStartBudget time.Duration

// upLab builds a lab from YAML (its name is set here) and registers its removal.
func upLab(t *testing.T, yaml string) *lab.Lab {
	t.Helper()
	return upLabBudget(t, yaml, labStartBudget)
}

// upLabBudget is upLab with lab.Options.StartBudget budget (0: the lab's defaults).
func upLabBudget(t *testing.T, yaml string, budget time.Duration) *lab.Lab {
	t.Helper()
	name := "moorov-" + plugintest.RandomSuffix()
	spec, err := lab.Parse([]byte("name: "+name+"\n"+yaml), name)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "moorov")
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.Up(context.Background(), spec, lab.Options{Root: root, BinDir: binDir, Progress: &testWriter{t: t}, StartBudget: budget})
	t.Cleanup(func() {
		if l != nil {
			if err := l.Down(context.Background()); err != nil {
				t.Errorf("lab down: %v", err)
			}
		}
		_ = os.RemoveAll(root)
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), name) {
			t.Errorf("namespaces of %s left behind:\n%s", name, out)
		}
	})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	labStateInLab(t, l)
	return l
}

// labStateInLab checks that the lab's hosts keep their per-namespace volatile state (the
// DNS sidecar's firewall State, opened by its repair) in their own run directory, which
// Down removes with the lab, and none under the machine's run directory, where it would
// outlive the host's namespace.
func labStateInLab(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, h := range l.Hosts {
		id, err := netnsid.Of(filepath.Join(plugintest.NetnsDir, h.Netns))
		if err != nil {
			t.Fatalf("host %s: %v", h.Name, err)
		}
		if dir := netnsid.StateDir(statefs.DefaultRunDir, id, false); fileExists(dir) {
			t.Errorf("host %s keeps state under the machine's run directory: %s", h.Name, dir)
		}
		if dir := firewall.StateDirIn(h.RunDir(), id, false); h.DNS.PID > 0 && !fileExists(dir) {
			t.Errorf("host %s: no firewall State of its DNS sidecar in its run directory (%s)", h.Name, dir)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// kernelState is what `ip` and `bridge` (not moor's code) show on a host for the overlay:
// routes with moor's protocol, neighbours and FDB entries of the VXLAN device.
type kernelState struct {
	Routes []string // "10.240.1.0/24 via 10.240.1.1 onlink"
	Neighs []string // "10.240.1.1 92:7c:..."
	FDB    []string // "92:7c:... dst 172.31.0.2"
}

func (k kernelState) String() string {
	return fmt.Sprintf("routes %v\nneighbours %v\nfdb %v", k.Routes, k.Neighs, k.FDB)
}

// ipJSON runs `ip -j` (or `bridge -j` for fdb) in a namespace given by name or path.
func ipJSON(netns string, args ...string) ([]map[string]any, error) {
	netns = filepath.Base(netns)
	cmd := "ip"
	if args[0] == "fdb" {
		cmd = "bridge"
	}
	out, err := exec.Command(cmd, append([]string{"-n", netns, "-j"}, args...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v in %s: %w", cmd, args, netns, err)
	}
	var rows []map[string]any
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil, nil
	}
	return rows, json.Unmarshal(out, &rows)
}

// readKernel reads the overlay entries of a host.
func readKernel(netns string) (kernelState, error) {
	var k kernelState
	routes, err := ipJSON(netns, "route", "show", "proto", "77")
	if err != nil {
		return k, err
	}
	for _, r := range routes {
		s := fmt.Sprintf("%v via %v", r["dst"], r["gateway"])
		if flags, _ := r["flags"].([]any); len(flags) > 0 {
			s += fmt.Sprintf(" %v", flags[0])
		}
		k.Routes = append(k.Routes, s)
	}
	neighs, err := ipJSON(netns, "neigh", "show", "dev", ovVXLAN)
	if err != nil {
		return k, err
	}
	for _, n := range neighs {
		k.Neighs = append(k.Neighs, fmt.Sprintf("%v %v", n["dst"], n["lladdr"]))
	}
	fdb, err := ipJSON(netns, "fdb", "show", "dev", ovVXLAN)
	if err != nil {
		return k, err
	}
	for _, f := range fdb {
		k.FDB = append(k.FDB, fmt.Sprintf("%v dst %v", f["mac"], f["dst"]))
	}
	sort.Strings(k.Routes)
	sort.Strings(k.Neighs)
	sort.Strings(k.FDB)
	return k, nil
}

// expected is the state a host must hold for the other hosts' leases: exactly one route,
// one neighbour and one FDB entry per other host.
func expected(leases []lease.Lease, self string) kernelState {
	var k kernelState
	for _, l := range leases {
		if l.HostID == self {
			continue
		}
		k.Routes = append(k.Routes, fmt.Sprintf("%s via %s onlink", l.Subnet, l.Gateway()))
		k.Neighs = append(k.Neighs, fmt.Sprintf("%s %s", l.Gateway(), l.VTEPMAC))
		k.FDB = append(k.FDB, fmt.Sprintf("%s dst %s", l.VTEPMAC, l.Underlay))
	}
	sort.Strings(k.Routes)
	sort.Strings(k.Neighs)
	sort.Strings(k.FDB)
	return k
}

// leases reads the network's leases from the lab's etcd.
func leases(t *testing.T, l *lab.Lab) []lease.Lease {
	t.Helper()
	cli, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ls, _, err := lease.New(cli, lease.Options{Prefix: ovStorePref, Network: ovNetwork}).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func leaseOf(ls []lease.Lease, hostID string) (lease.Lease, bool) {
	for _, l := range ls {
		if l.HostID == hostID {
			return l, true
		}
	}
	return lease.Lease{}, false
}

// waitConverged waits until every running host holds exactly the entries the leases call
// for and the leases are those of wantHosts; it fails the test with the difference.
func waitConverged(t *testing.T, l *lab.Lab, wantHosts ...string) []lease.Lease {
	t.Helper()
	deadline := time.Now().Add(ovConverge)
	for {
		ls := leases(t, l)
		err := converged(l, ls, wantHosts)
		if err == nil {
			return ls
		}
		if time.Now().After(deadline) {
			t.Fatalf("overlay did not converge within %s: %v", ovConverge, err)
		}
		time.Sleep(ovPoll)
	}
}

func converged(l *lab.Lab, ls []lease.Lease, wantHosts []string) error {
	var have []string
	for _, x := range ls {
		have = append(have, strings.TrimPrefix(x.HostID, l.Name+"-"))
	}
	sort.Strings(have)
	want := append([]string(nil), wantHosts...)
	sort.Strings(want)
	if strings.Join(have, ",") != strings.Join(want, ",") {
		return fmt.Errorf("leases held by %v, want %v", have, want)
	}
	var errs []error
	for _, name := range wantHosts {
		h, err := l.Host(name)
		if err != nil {
			return err
		}
		got, err := readKernel(h.Netns)
		if err != nil {
			return err
		}
		if exp := expected(ls, h.HostID); got.String() != exp.String() {
			errs = append(errs, fmt.Errorf("host %s holds\n%s\nwant\n%s", name, got, exp))
		}
	}
	return errors.Join(errs...)
}

// mustReach pings from a container to another's address and, when byName, resolves the
// name through the container's DNS server first. Hosts learn of changes asynchronously
// (etcd watches), so both are retried up to ovConverge.
func mustReach(t *testing.T, l *lab.Lab, from, to string, byName bool) {
	t.Helper()
	c, err := l.Container(to)
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr(c.Attachments[0].IP)
	var last error
	ok := waitUntil(ovConverge, func() bool {
		if byName {
			got, err := l.Resolve(from, ovNetwork, to)
			if err != nil || got != want {
				last = fmt.Errorf("%s resolves %s to %v (%v), want %s", from, to, got, err, want)
				return false
			}
		}
		if err := l.Ping(from, want); err != nil {
			last = fmt.Errorf("%s -> %s (%s): %w", from, to, want, err)
			return false
		}
		return true
	})
	if ok != nil {
		t.Fatal(last)
	}
}

// cniCodeOf extracts a CNI error code from a lab error (libcni keeps *types.Error).
func cniCodeOf(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// links lists the link names of a namespace.
func links(t *testing.T, netns string) []string {
	t.Helper()
	rows, err := ipJSON(netns, "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, fmt.Sprint(r["ifname"]))
	}
	sort.Strings(out)
	return out
}

// waitUntil polls ok until it holds or timeout passes.
func waitUntil(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		time.Sleep(ovPoll)
	}
	return nil
}

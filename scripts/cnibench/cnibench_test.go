package main

import (
	"context"
	"encoding/xml"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins/plugintest"
)

// smokeTimeout bounds the whole QUICK run.
const smokeTimeout = 3 * time.Minute

// moorPlugins are built for the smoke run when their directory builds; moor-none is
// required, the others are used when present.
var moorPlugins = []string{"none", "bridge", "ipam", "cmd/moor-ipam-etcd"}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func buildMoor(t *testing.T) (dir string, built map[string]bool) {
	t.Helper()
	dir, built = t.TempDir(), map[string]bool{}
	for _, p := range moorPlugins {
		name := moorBinPrefix + p
		if strings.HasPrefix(p, "cmd/") {
			name = filepath.Base(p) // commands keep their own names
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), "github.com/moornet/moor/"+p).CombinedOutput()
		if err != nil {
			if p == "none" {
				t.Fatalf("building moor-none: %v\n%s", err, out)
			}
			t.Logf("moor-%s not buildable, its suites are skipped: %s", p, strings.TrimSpace(string(out)))
			continue
		}
		built[p] = true
	}
	return dir, built
}

func hostLinks(t *testing.T) map[string]bool {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		out[l.Attrs().Name] = true
	}
	return out
}

// TestQuickRun runs the harness in QUICK mode on the reference loopback, moor-none and
// the netlink floor (plus the bridges, and IPAM, when those build) and checks that it
// produced numbers, wrote a report and a plot, and left no namespace or link behind. It
// does not look at how fast anything was.
func TestQuickRun(t *testing.T) {
	plugintest.RequireRoot(t)
	o := defaultOptions()
	o.quick()
	for _, b := range []string{"loopback", "bridge", refHostLocal} {
		if _, err := os.Stat(filepath.Join(o.RefBin, b)); err != nil {
			t.Skipf("reference plugins not installed (%v); scripts/deps.sh installs them", err)
		}
	}
	var built map[string]bool
	o.MoorBin, built = buildMoor(t)
	o.Log = testLog{t}
	o.Scenarios = []string{scenLatency, scenGrowth, scenIPAM}
	o.Suites = []string{sRefLoopback, sMoorNone, sFloor}
	want := []string{sRefLoopback, sMoorNone, sFloor}
	wantGrowth := []string{sRefBridge, sFloor}
	if built["bridge"] {
		o.Suites = append(o.Suites, sRefBridge, sMoorBridge)
		want = append(want, sRefBridge, sMoorBridge)
		wantGrowth = append(wantGrowth, sMoorBridge)
	}
	before := hostLinks(t)

	ctx, cancel := context.WithTimeout(context.Background(), smokeTimeout)
	defer cancel()
	res, err := measure(ctx, o)
	if err != nil {
		t.Fatalf("QUICK run: %v", err)
	}

	positive := func(what string, v float64) {
		t.Helper()
		if math.IsNaN(v) || v <= 0 {
			t.Errorf("%s = %v, want a positive number", what, v)
		}
	}
	for _, c := range res.Latency.Cfgs {
		for _, s := range want {
			if msg, failed := res.Latency.Errs[cellKey(c, s)]; failed {
				t.Errorf("%s at %s failed: %s", s, c, msg)
				continue
			}
			rs := res.Latency.cell(c, s)
			positive(s+" "+c.String()+" ADD p50", overRounds(rs, mAddP50))
			positive(s+" "+c.String()+" DEL p50", overRounds(rs, mDelP50))
			positive(s+" "+c.String()+" ADD wall", overRounds(rs, mAddWall))
			if s != sFloor {
				positive(s+" "+c.String()+" ADD CPU", overRounds(rs, mAddCPU))
			}
		}
	}
	g := res.Growth.Cfgs[0]
	_, _, _, _, _, tenth := growthMetrics(g.N)
	for _, s := range wantGrowth {
		for _, tm := range tenth {
			positive("growth "+s+" tenth "+tm.name, overRounds(res.Growth.cell(g, s), tm))
		}
	}
	for _, l := range res.IPAM.Levels {
		positive("host-local ADD p50 at "+itoa(l), overRounds(res.IPAM.Runs[ipamKey(l, sRefHostLocal)], mAddP50))
	}
	if len(res.IPAM.Errs) > 0 {
		t.Errorf("ipam errors: %v", res.IPAM.Errs)
	}

	var sb strings.Builder
	writeReport(&sb, res)
	for _, s := range []string{"moor-none / ref-loopback", "## cni-latency", "## ADD latency growth", "## IPAM alone"} {
		if !strings.Contains(sb.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, sb.String())
		}
	}
	if err := xml.NewDecoder(strings.NewReader(growthSVG(res.Growth))).Decode(new(struct{})); err != nil && err != io.EOF {
		t.Errorf("growth SVG is not well-formed XML: %v", err)
	}

	ents, err := os.ReadDir(plugintest.NetnsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), "-"+res.RunID+"-") {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
	for name := range hostLinks(t) {
		if !before[name] && (strings.HasPrefix(name, "moorb") || strings.HasPrefix(name, "veth") || name == bridgeName) {
			t.Errorf("link %s appeared in the test's own netns", name)
		}
	}
}

func itoa(v int) string { return joinInts([]int{v}) }

func TestQuantile(t *testing.T) {
	v := []float64{4, 1, 3, 2, 5}
	for _, c := range []struct{ q, want float64 }{{0, 1}, {0.5, 3}, {1, 5}, {0.25, 2}, {0.95, 4.8}} {
		if got := quantile(v, c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v, %v) = %v, want %v", v, c.q, got, c.want)
		}
	}
	if !math.IsNaN(quantile(nil, p50)) {
		t.Error("quantile of nothing should be NaN")
	}
	if v[0] != 4 {
		t.Error("quantile sorted its input in place")
	}
}

func TestRatioOverRoundsSkipsFailedRounds(t *testing.T) {
	a := []*runStats{{AddP50: 2}, nil, {AddP50: 6}}
	b := []*runStats{{AddP50: 4}, {AddP50: 1}, {AddP50: 3}}
	// rounds 0 and 2: ratios 0.5 and 2, median 1.25
	if got := ratioOverRounds(a, b, mAddP50); math.Abs(got-1.25) > 1e-9 {
		t.Errorf("ratio = %v, want 1.25", got)
	}
}

// TestEtcdStartsAndStops starts etcd in a private netns the way the ipam scenario does,
// checks it answers /health there, and that stop kills it.
func TestEtcdStartsAndStops(t *testing.T) {
	plugintest.RequireRoot(t)
	if _, err := exec.LookPath(etcdBinary); err != nil {
		t.Skip("etcd not installed (Debian package etcd-server)")
	}
	l, err := newLab()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	b := &bench{o: defaultOptions(), lab: l}
	host, err := l.newHost()
	if err != nil {
		t.Fatal(err)
	}
	endpoint, stop, err := b.startEtcd(host)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.procs) != 1 {
		t.Fatalf("tracked processes: %d, want 1", len(l.procs))
	}
	var pid int
	for p := range l.procs {
		pid = p
	}
	var reply []byte
	deadline := time.Now().Add(etcdReadyWait)
	for !strings.Contains(string(reply), `"health":"true"`) && time.Now().Before(deadline) {
		err = host.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(endpoint, "http://"), time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.Write([]byte("GET /health HTTP/1.0\r\n\r\n")); err != nil {
				return err
			}
			reply, err = io.ReadAll(c)
			return err
		})
		if err != nil {
			t.Fatalf("asking etcd at %s: %v", endpoint, err)
		}
		time.Sleep(etcdPollPeriod)
	}
	if !strings.Contains(string(reply), `"health":"true"`) {
		t.Fatalf("etcd /health: %q", reply)
	}
	stop()
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("etcd pid %d still there after stop (kill 0: %v)", pid, err)
	}
}

// Container IDs look like a runtime's and never share a short ID (moor-dns registers it
// as a name: shared ones would make the default chain's numbers those of one crowded name).
func TestContainerIDsHaveDistinctShortIDs(t *testing.T) {
	seen := map[string]int{}
	for i := range 20000 {
		id := containerID(i)
		if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("containerID(%d) = %q, want 64 hex digits", i, id)
		}
		if j, dup := seen[id[:12]]; dup {
			t.Fatalf("containers %d and %d share the short ID %s", j, i, id[:12])
		}
		seen[id[:12]] = i
	}
}

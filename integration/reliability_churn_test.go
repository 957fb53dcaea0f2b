package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/miekg/dns"

	"github.com/moornet/moor/plugins/plugintest"
)

// Churn soak: workers attach and detach containers (ADD, a lookup of the container's own
// name through the sidecar, DEL) on bridge + moor-dns networks. At the end nothing is
// leaked (addresses, links, rules, records, netns) and the sidecar's descriptors are back
// to what they were after the warm-up, its threads and memory have not grown with the
// cycles. In `go test ./...` it runs briefly; scripts/soak.sh runs 2,000 cycles.
//
// Knobs (environment): MOOR_SOAK_CYCLES (cycles after the warm-up), MOOR_SOAK_WORKERS,
// MOOR_SOAK_MAX (a duration: no cycle starts after it), MOOR_SOAK_DRIVERS (comma list of
// churnDrivers keys).

// Defaults of the brief run inside `go test ./...`.
const (
	churnDefaultCycles  = 96
	churnDefaultWorkers = 8
	churnDefaultMax     = 2 * time.Minute
	// churnThreadSlack: Go never gives threads back, and a burst of blocking syscalls
	// can add a few after the warm-up; a leak adds threads in proportion to the cycles.
	churnThreadSlack = 8
	// churnRSSSlackKiB: the Go heap breathes; a leak of a few KiB per cycle over 2,000
	// cycles shows well above this.
	churnRSSSlackKiB = 16 << 10
	// churnSettle bounds the wait for the sidecar to close the control connections of
	// the last plugins (HTTP keep-alive ends when the client process is gone).
	churnSettle = 10 * time.Second
)

// churnDriver builds a network of one driver for the soak. The overlay driver adds
// itself here when it exists (its lab hosts give it the etcd store it needs).
type churnDriver struct {
	network func(w *dnsWorld) (list *libcni.NetworkConfigList, gateway string)
}

var churnDrivers = map[string]churnDriver{
	"bridge": {network: func(w *dnsWorld) (*libcni.NetworkConfigList, string) {
		return w.network("soakbr", "msoak0", "10.232.0.0/24", nil), "10.232.0.1"
	}},
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func TestReliabilityChurn(t *testing.T) {
	cycles := envInt(t, "MOOR_SOAK_CYCLES", churnDefaultCycles)
	workers := envInt(t, "MOOR_SOAK_WORKERS", churnDefaultWorkers)
	maxDur := churnDefaultMax
	if v := os.Getenv("MOOR_SOAK_MAX"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("MOOR_SOAK_MAX=%q: %v", v, err)
		}
		maxDur = d
	}
	drivers := strings.Split(os.Getenv("MOOR_SOAK_DRIVERS"), ",")
	if drivers[0] == "" {
		drivers = []string{"bridge"}
	}
	for _, name := range drivers {
		d, ok := churnDrivers[name]
		if !ok {
			t.Fatalf("MOOR_SOAK_DRIVERS: unknown driver %q", name)
		}
		t.Run(name, func(t *testing.T) { churn(t, d, cycles, workers, maxDur) })
	}
}

func churn(t *testing.T, d churnDriver, cycles, workers int, maxDur time.Duration) {
	w := newDNSWorld(t)
	list, gw := d.network(w)
	network := list.Name
	recordsDir := filepath.Join(w.dir, "records")
	_, _, _ = w.container(list, "anchor") // keeps the network's records and listeners

	run := func(n int, deadline time.Time) (done int, failures []string) {
		var next, ok atomic.Int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(n) || time.Now().After(deadline) {
						return
					}
					if err := churnCycle(w, list, gw, fmt.Sprintf("soak%d", i)); err != nil {
						mu.Lock()
						failures = append(failures, err.Error())
						mu.Unlock()
						continue
					}
					ok.Add(1)
				}
			})
		}
		wg.Wait()
		return int(ok.Load()), failures
	}

	start := time.Now()
	if _, failures := run(2*workers, start.Add(maxDur)); len(failures) > 0 {
		t.Fatalf("warm-up: %d failures, first: %s", len(failures), failures[0])
	}
	baseline := w.footprint(network, recordsDir, nil)
	pid := w.sidecarPID()
	before, err := settledStats(pid, 0)
	if err != nil {
		t.Fatalf("sidecar %d: %v", pid, err)
	}

	measured := time.Now()
	done, failures := run(cycles, start.Add(maxDur))
	elapsed := time.Since(measured)
	for i, f := range failures {
		if i == 5 {
			t.Errorf("... %d failures in all", len(failures))
			break
		}
		t.Error(f)
	}
	if done < cycles {
		t.Logf("MOOR_SOAK_MAX %s reached after %d of %d cycles", maxDur, done, cycles)
	}

	if d := baseline.diff(w.footprint(network, recordsDir, nil)); d != "" {
		t.Errorf("leaked after %d cycles:\n%s", done, d)
	}
	if left := leftoverNetns("moorit-soak"); len(left) > 0 {
		t.Errorf("netns left: %v", left)
	}
	locksFree(t, append(append(ipamLocks(w.dataDir, network), fwLock), dnsLocks(recordsDir, network)...)...)
	noTempFiles(t, recordsDir)
	if w.sidecarPID() != pid {
		t.Fatalf("the sidecar changed from pid %d to %d during the soak", pid, w.sidecarPID())
	}
	after, err := settledStats(pid, before.FDs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SOAK %s: %d cycles (%d workers) in %s, %.1f cycles/s; sidecar after warm-up: %s; after the soak: %s",
		network, done, workers, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds(), before, after)
	if after.FDs != before.FDs {
		t.Errorf("sidecar descriptors %d -> %d", before.FDs, after.FDs)
	}
	if after.Threads > before.Threads+churnThreadSlack {
		t.Errorf("sidecar threads %d -> %d", before.Threads, after.Threads)
	}
	if after.RSSKiB > before.RSSKiB+churnRSSSlackKiB {
		t.Errorf("sidecar RSS %d KiB -> %d KiB", before.RSSKiB, after.RSSKiB)
	}
}

// churnCycle attaches one container, resolves its own name through the sidecar, and
// detaches it again.
func churnCycle(w *dnsWorld, list *libcni.NetworkConfigList, gw, name string) error {
	ctr, err := plugintest.NewNamedNetns("moorit-soak-" + plugintest.RandomSuffix())
	if err != nil {
		return err
	}
	defer func() { _ = plugintest.DeleteNetns(ctr) }()
	rt := attachment(ctr, "eth0")
	rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", name})
	res, err := w.rt.add(list, rt)
	if err != nil {
		return fmt.Errorf("ADD %s: %w", name, err)
	}
	ips, rcode, err := lookup(ctr, gw, name, 2*time.Second)
	if err != nil || rcode != dns.RcodeSuccess || len(ips) != 1 || ips[0] != ipOf(res) {
		err = fmt.Errorf("%s resolves to %v (rcode %d, %v), want %s", name, ips, rcode, err, ipOf(res))
	}
	if derr := w.rt.del(list, rt); derr != nil {
		return fmt.Errorf("DEL %s: %w", name, derr)
	}
	return err
}

// settledStats reads the sidecar's costs once its descriptor count has stopped moving
// (or equals want, when want > 0), within churnSettle.
func settledStats(pid, want int) (procStats, error) {
	deadline := time.Now().Add(churnSettle)
	last, err := readProcStats(pid)
	for err == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		cur, cerr := readProcStats(pid)
		if cerr != nil {
			return cur, cerr
		}
		if (want > 0 && cur.FDs == want) || (want == 0 && cur.FDs == last.FDs) {
			return cur, nil
		}
		last = cur
	}
	return last, err
}

// leftoverNetns lists the named netns whose name starts with prefix.
func leftoverNetns(prefix string) []string {
	entries, _ := os.ReadDir(plugintest.NetnsDir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

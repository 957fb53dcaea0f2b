package integration

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"

	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/plugintest"
)

// Fault injection: every fault point of bridge, IPAM, DNS and host, in both modes (the
// plugin returns an error there, or SIGKILLs itself there, leaving no chance to roll
// back). For each: the runtime's DEL afterwards leaves the host exactly as before the
// ADD (links, rules, reservations, records, the container's links), no lock stays held,
// and the next ADD and DEL work.

// faultModes are the two ways a fault point fires.
var faultModes = []string{"error", "kill"}

// faultPoint is one named point; del marks a point inside DEL (ADD succeeds first),
// chained a point of a plugin after the first in the conflist (the ADD of the plugins
// before it stands until the runtime's DEL).
type faultPoint struct {
	name    string
	del     bool
	chained bool
}

// faultPort hands each subtest its own published port, so no ADD meets another's.
var faultPort atomic.Int32

func init() { faultPort.Store(18300) }

// faultScene is a network under fault injection.
type faultScene struct {
	w          *world
	list       *libcni.NetworkConfigList
	network    string
	recordsDir string   // "" without moor-dns
	gateway    string   // with moor-dns: where the sidecar answers
	locks      []string // lock files that must come free
	tempDirs   []string // where no temp file may be left
}

// run arms point in mode around the operation it sits in, then checks the runtime's DEL
// and the next ADD.
func (s *faultScene) run(t *testing.T, point faultPoint, mode string) {
	w := s.w
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	rt.ContainerID = "c" + plugintest.RandomSuffix() + plugintest.RandomSuffix()
	rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", "victim"})
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": int(faultPort.Add(1)), "containerPort": 80}}}
	before := w.footprint(s.network, s.recordsDir, ctr)
	armed := point.name + ":" + mode

	var err error
	if point.del {
		if _, err := w.rt.add(s.list, rt); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		t.Setenv(plugins.FaultEnv, armed)
		err = w.rt.del(s.list, rt)
	} else {
		t.Setenv(plugins.FaultEnv, armed)
		_, err = w.rt.add(s.list, rt)
	}
	t.Setenv(plugins.FaultEnv, "")
	wantFault(t, err, point.name, mode)
	left := before.diff(w.footprint(s.network, s.recordsDir, ctr))
	if mode == "error" && !point.del && !point.chained && left != "" {
		t.Errorf("the failed ADD did not roll back:\n%s", left)
	}
	if mode == "kill" {
		t.Logf("left for the runtime's DEL after %s: %s", armed, strings.ReplaceAll(left, "\n", "; "))
	}

	if err := w.rt.del(s.list, rt); err != nil {
		t.Fatalf("the runtime's DEL after the fault: %v", err)
	}
	if d := before.diff(w.footprint(s.network, s.recordsDir, ctr)); d != "" {
		t.Errorf("left behind after %s and DEL:\n%s", armed, d)
	}
	if s.gateway != "" { // the sidecar forgot the name too, not only the store
		if ips, rcode, err := lookup(w.host, s.gateway, "victim.dns.moor", 2*time.Second); err != nil || rcode != dns.RcodeNameError {
			t.Errorf("after %s and DEL the sidecar answers %v (rcode %d, %v), want NXDOMAIN", armed, ips, rcode, err)
		}
	}
	locksFree(t, s.locks...)
	for _, dir := range s.tempDirs {
		noTempFiles(t, dir)
	}
	if _, err := w.rt.add(s.list, rt); err != nil {
		t.Fatalf("the next ADD: %v", err)
	}
	if err := w.rt.del(s.list, rt); err != nil {
		t.Fatalf("the next DEL: %v", err)
	}
	if d := before.diff(w.footprint(s.network, s.recordsDir, ctr)); d != "" {
		t.Errorf("left behind by the next ADD and DEL:\n%s", d)
	}
}

// wantFault checks that the operation failed at the armed point: with the point's error,
// or killed.
func wantFault(t *testing.T, err error, point, mode string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("%s:%s armed, the operation succeeded: the point was not reached", point, mode)
	case mode == "kill" && !strings.Contains(err.Error(), "killed"):
		t.Fatalf("%s:kill armed, the plugin was not killed: %v", point, err)
	case mode == "error" && !strings.Contains(err.Error(), "fault injected at "+point):
		t.Fatalf("%s:error armed, another error: %v", point, err)
	}
}

// warmUp runs one ADD and DEL so that the network's own objects (bridge, gateway address,
// network rules, the sidecar), which outlive attachments by design, exist before the
// footprint is taken.
func (s *faultScene) warmUp(t *testing.T) {
	t.Helper()
	ctr := plugintestNetns(t)
	rt := attachment(ctr, "eth0")
	rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", "warmup"})
	if _, err := s.w.rt.add(s.list, rt); err != nil {
		t.Fatalf("warm-up ADD: %v", err)
	}
	if err := s.w.rt.del(s.list, rt); err != nil {
		t.Fatalf("warm-up DEL: %v", err)
	}
}

func (s *faultScene) runAll(t *testing.T, points []faultPoint) {
	s.warmUp(t)
	for _, p := range points {
		for _, mode := range faultModes {
			t.Run(p.name+":"+mode, func(t *testing.T) { s.run(t, p, mode) })
		}
	}
}

// bridgeFaultPoints are moor-bridge's points and the in-process IPAM's.
var bridgeFaultPoints = []faultPoint{
	{name: "bridge/after-ipam"}, {name: "ipam/after-reserve"}, {name: "bridge/after-veth"},
	{name: "bridge/after-addresses"}, {name: "bridge/after-firewall"}, {name: "bridge/del-after-veth", del: true},
}

func TestReliabilityBridgeFaults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		network := "rfbridge"
		s := &faultScene{w: w, network: network, list: w.network(network, "mrfb0", "10.230.0.0/24", nil),
			locks: append(ipamLocks(w.dataDir, network), fwLock)}
		s.runAll(t, bridgeFaultPoints)
	})
}

// dnsFaultPoints are moor-dns's points, reached after moor-bridge in the chain.
var dnsFaultPoints = []faultPoint{
	{name: "dns/after-record", chained: true}, {name: "dns/after-sidecar", chained: true}, {name: "dns/del-after-record", del: true},
}

// On both firewall backends: the ADD's own query to the sidecar goes from the host to
// the gateway address, which the iptables backend used to masquerade.
func TestReliabilityDNSFaults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, bw *world) {
		w := &dnsWorld{world: bw, dir: t.TempDir()}
		t.Cleanup(w.stopSidecar)
		network := "rfdns"
		recordsDir := w.dir + "/records"
		s := &faultScene{w: w.world, network: network, list: w.network(network, "mrfd0", "10.231.0.0/24", nil),
			recordsDir: recordsDir, tempDirs: []string{recordsDir}, gateway: "10.231.0.1",
			locks: append(append(ipamLocks(w.dataDir, network), fwLock), dnsLocks(recordsDir, network)...)}
		s.runAll(t, append(dnsFaultPoints, faultPoint{name: "bridge/after-firewall"}))
		if pid := w.sidecarPID(); pid <= 0 {
			t.Error("no sidecar is running after the faults")
		}
	})
}

// hostFaultPoints are moor-host's (device mode) points.
var hostFaultPoints = []faultPoint{{name: "host/after-move"}, {name: "host/del-after-move", del: true}}

// moor-host moves a host link: after a fault and DEL the link is back in the host under
// its name, and gone from the container.
func TestReliabilityHostFaults(t *testing.T) {
	for _, p := range hostFaultPoints {
		for _, mode := range faultModes {
			t.Run(p.name+":"+mode, func(t *testing.T) {
				host := hostWithUplink(t)
				ctr := plugintest.Netns(t, "moorit-rfhc")
				r := newRuntime(t, host)
				list := conflist(t, "1.1.0", "rfhost", map[string]any{"type": "moor-host", "device": "mhdev0"})
				rt := attachment(ctr, "net1")
				hostBefore, ctrBefore := netnsLinks(t, host), netnsLinks(t, ctr)
				armed := p.name + ":" + mode
				var err error
				if p.del {
					if _, err := r.add(list, rt); err != nil {
						t.Fatalf("ADD: %v", err)
					}
					t.Setenv(plugins.FaultEnv, armed)
					err = r.del(list, rt)
				} else {
					t.Setenv(plugins.FaultEnv, armed)
					_, err = r.add(list, rt)
				}
				t.Setenv(plugins.FaultEnv, "")
				wantFault(t, err, p.name, mode)
				if err := r.del(list, rt); err != nil {
					t.Fatalf("the runtime's DEL after the fault: %v", err)
				}
				checkLinks(t, host, "host", hostBefore)
				checkLinks(t, ctr, "container", ctrBefore)
				if _, err := r.add(list, rt); err != nil {
					t.Fatalf("the next ADD: %v", err)
				}
				if err := r.del(list, rt); err != nil {
					t.Fatalf("the next DEL: %v", err)
				}
				checkLinks(t, host, "host", hostBefore)
			})
		}
	}
}

func checkLinks(t *testing.T, netns ns.NetNS, where string, want []string) {
	t.Helper()
	if got := netnsLinks(t, netns); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s links %v, want %v", where, got, want)
	}
}

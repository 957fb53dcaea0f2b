package integration

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/netnsid"
)

// repairWithin bounds the wait for the sidecar to put the rules back: a generous
// "eventually", never a timing assertion (the machine is shared and noisy; the time the
// repair took is logged, and docs/reliability.md reports what was measured).
const repairWithin = 15 * time.Second

// quietFor is how long the test watches for a repair that must not happen (several
// backstop checks).
const quietFor = 2 * time.Second

// The real chain moor-bridge + moor-dns in a namespace playing the host (MOOR_RUN_DIR in
// a temporary directory): the DNS sidecar the ADD starts runs the firewall repair with
// CAP_NET_ADMIN kept. After the whole firewall is flushed, and after only moor's objects
// are removed, the published port, masquerade and isolation (against a second network
// without DNS in the same host) work again; the container keeps its address and is not
// restarted; /healthz counts the repairs; a DEL'd attachment and a removed network are
// not brought back.
func TestSidecarRepairsFirewall(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		paths := repairHost(t, w)
		dns := map[string]any{"type": "moor-dns", "idleTimeout": "-1s"}
		list := conflist(t, "1.1.0", "fixnet", w.bridgeConf("mfx0", "10.213.0.0/24", nil), dns)
		plain := w.network("plainnet", "mfx1", "10.214.0.0/24", nil)
		web, rt, _ := w.attach(list, map[string]any{"hostPort": 18111, "containerPort": 80, "protocol": "tcp"})
		other, _, ores := w.attach(plain)
		serveTCP(t, web, ":80")
		serveTCP(t, other, ":80")
		serveTCP(t, w.outside, outsideIP+":9000")
		addrBefore := addrsOf(t, web)
		works := func(when string) error {
			if _, err := dialTCP(w.outside, hostUplinkIP+":18111"); err != nil {
				return fmt.Errorf("%s: published port: %w", when, err)
			}
			if src, err := dialTCP(web, outsideIP+":9000"); err != nil || src != hostUplinkIP {
				return fmt.Errorf("%s: masquerade: seen as %q, %v", when, src, err)
			}
			if _, err := dialTCP(web, ipOf(ores)+":80"); err == nil {
				return fmt.Errorf("%s: isolation: the other network's container answered", when)
			}
			return nil
		}
		if err := works("before"); err != nil {
			t.Fatal(err)
		}
		pid := sidecarUID(t, paths.PidFile)

		reloads := [][][]string{{{"nft", "flush", "ruleset"}}, {{"nft", "delete", "table", "inet", "moor"}}}
		if w.backend == firewall.KindIPTables {
			reloads = [][][]string{{{"iptables", "-F"}, {"iptables", "-t", "nat", "-F"}},
				{{"iptables", "-F", "MOOR-FORWARD"}, {"iptables", "-t", "nat", "-F", "MOOR-HOSTPORTS"}, {"iptables", "-t", "nat", "-F", "MOOR-POSTROUTING"}}}
		}
		repairs := func() uint64 {
			h, err := server.ReadHealth(paths.ControlSocket)
			if err != nil || h.FirewallRepair == nil {
				t.Fatalf("/healthz: %+v, %v; want the firewall repair", h, err)
			}
			return h.FirewallRepair.Repairs
		}
		for i, cmds := range reloads {
			before := repairs()
			w.inHost(t, cmds...)
			// A repair counted proves the reload took something away (it may be back
			// before a check here could see it gone). Its time is the repair's; the
			// packets' includes a dial that must fail (isolation) waiting its timeout.
			waitFor(t, fmt.Sprintf("repair counted after reload %d", i), repairWithin, func() bool { return repairs() > before })
			waitFor(t, fmt.Sprintf("packets flow after reload %d", i), repairWithin, func() bool { return works("after") == nil })
		}
		h, err := server.ReadHealth(paths.ControlSocket)
		if err != nil || h.FirewallRepair == nil || h.FirewallRepair.Repairs < 2 || h.FirewallRepair.LastRepair.IsZero() {
			t.Fatalf("/healthz: %+v %v, want two repairs counted", h.FirewallRepair, err)
		}
		if got := addrsOf(t, web); got != addrBefore || h.PID != pid {
			t.Fatalf("container address %q (was %q) or sidecar pid %d (was %d) changed", got, addrBefore, h.PID, pid)
		}

		if err := w.rt.del(list, rt); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		// The network's removal, as `moor network rm` does it.
		fw, err := firewall.New(w.backend, firewall.Options{NetNS: w.host})
		if err != nil {
			t.Fatal(err)
		}
		plainNet := firewall.Network{Name: "plainnet", Bridge: "mfx1", Subnets: []*net.IPNet{cidr("10.214.0.0/24")}, IPMasq: true}
		if err := fw.CheckNetwork(plainNet); err != nil {
			t.Fatalf("plainnet's rules before its removal: %v", err)
		}
		if err := fw.RemoveNetwork("plainnet"); err != nil {
			t.Fatalf("network removal: %v", err)
		}
		w.inHost(t, reloads[0]...)
		time.Sleep(quietFor) // time enough for a repair that should not happen
		if got := w.fwAttachments("fixnet"); len(got) != 0 {
			t.Fatalf("DEL'd published port back: %v", got)
		}
		if _, err := dialTCP(w.outside, hostUplinkIP+":18111"); err == nil {
			t.Fatal("DEL'd published port answers")
		}
		if err := fw.CheckNetwork(plainNet); err == nil {
			t.Fatal("the removed network's rules are back")
		}
		if err := fw.CheckNetwork(firewall.Network{Name: "fixnet", Bridge: "mfx0", Subnets: []*net.IPNet{cidr("10.213.0.0/24")}, IPMasq: true}); err != nil {
			t.Fatalf("fixnet (still there) not repaired: %v", err)
		}
	})
}

// repairHost gives the world's host its own MOOR_RUN_DIR, turns the firewall repair on
// for the sidecars its ADDs start, and returns the host's sidecar paths (the sidecar is
// stopped when the test ends).
func repairHost(t *testing.T, w *world) server.Paths {
	t.Helper()
	run := t.TempDir()
	t.Setenv("MOOR_RUN_DIR", run)
	t.Setenv("MOOR_FIREWALL_REPAIR", "")
	id, err := netnsid.Of(w.host.Path())
	if err != nil {
		t.Fatal(err)
	}
	paths := server.PathsFor(run, id, false)
	t.Cleanup(func() { stopSidecarAt(paths.PidFile) })
	return paths
}

// inHost runs commands in the host namespace, failing the test on an error.
func (w *world) inHost(t *testing.T, cmds ...[]string) {
	t.Helper()
	_ = w.host.Do(func(ns.NetNS) error {
		for _, c := range cmds {
			if out, err := execOut(c[0], c[1:]...); err != nil {
				t.Fatalf("%v: %v: %s", c, err, out)
			}
		}
		return nil
	})
}

// sidecarUID checks the running sidecar's identity: the unprivileged uid, CAP_NET_ADMIN
// kept beside CAP_NET_BIND_SERVICE (and CAP_NET_RAW for iptables), nothing else; it
// returns its pid.
func sidecarUID(t *testing.T, pidFile string) int {
	t.Helper()
	pid, ok := server.Running(pidFile)
	if !ok {
		t.Fatalf("no sidecar holds %s", pidFile)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, "Uid:"); ok && strings.Fields(v)[1] != fmt.Sprint(server.DefaultUID) {
			t.Fatalf("sidecar runs as uid %s", v)
		}
	}
	eff := capEff(t, pid)
	allowed := uint64(1)<<unix.CAP_NET_BIND_SERVICE | 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW
	if eff&(1<<unix.CAP_NET_ADMIN) == 0 || eff&^allowed != 0 {
		t.Fatalf("sidecar capabilities %x: want CAP_NET_ADMIN and nothing beyond %x", eff, allowed)
	}
	return pid
}

// addrsOf lists the IPv4 addresses of eth0 in netns.
func addrsOf(t *testing.T, netns ns.NetNS) string {
	t.Helper()
	var out []byte
	err := netns.Do(func(ns.NetNS) error {
		var err error
		out, err = execOut("ip", "-4", "-o", "addr", "show", "eth0")
		return err
	})
	if err != nil {
		t.Fatalf("ip addr: %v: %s", err, out)
	}
	return string(out)
}

// waitFor polls ok until it holds or within has passed, and logs how long it took.
func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	start := time.Now()
	for end := start.Add(within); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
	t.Logf("%s: after %s", what, time.Since(start).Round(time.Millisecond))
}

// firewallRepair: false in the moor-dns config starts a sidecar without the repair and
// with CAP_NET_BIND_SERVICE alone.
func TestSidecarWithoutFirewallRepair(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	paths := repairHost(t, w)
	dns := map[string]any{"type": "moor-dns", "idleTimeout": "-1s", "firewallRepair": false}
	list := conflist(t, "1.1.0", "norepair", w.bridgeConf("mfx2", "10.215.0.0/24", nil), dns)
	w.attach(list)
	h, err := server.ReadHealth(paths.ControlSocket)
	if err != nil || h.FirewallRepair != nil {
		t.Fatalf("/healthz: %+v, %v; want no firewall repair", h.FirewallRepair, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("CapEff:\t%016x", uint64(1)<<unix.CAP_NET_BIND_SERVICE)
	if !strings.Contains(string(b), want+"\n") {
		t.Fatalf("sidecar status lacks %q:\n%s", want, b)
	}
}

// The DNS sidecar also puts back the bridge driver's MAC spoof check (table bridge moor)
// after `nft flush ruleset`: a container that changed its MAC is cut off before the flush
// and again once the repair is counted, with one rule for it.
func TestSidecarRepairsMacSpoof(t *testing.T) {
	w := newWorld(t, "")
	paths := repairHost(t, w)
	dns := map[string]any{"type": "moor-dns", "idleTimeout": "-1s"}
	list := conflist(t, "1.1.0", "spoofrep", w.bridgeConf("msr0", "10.219.0.0/24", map[string]any{"macspoofchk": true}), dns)
	ctr, rt, _ := w.attach(list)
	if err := ping(ctr, "10.219.0.1"); err != nil {
		t.Fatalf("before spoofing: %v", err)
	}
	_ = ctr.Do(func(ns.NetNS) error {
		_, err := execOut("ip", "link", "set", "eth0", "address", "02:00:de:ad:be:ef")
		return err
	})
	if err := ping(ctr, "10.219.0.1"); err == nil {
		t.Fatal("a container with a spoofed MAC reached the gateway before the flush")
	}
	repairs := func() uint64 {
		h, err := server.ReadHealth(paths.ControlSocket)
		if err != nil || h.FirewallRepair == nil {
			t.Fatalf("/healthz: %+v, %v; want the firewall repair", h, err)
		}
		return h.FirewallRepair.Repairs
	}
	before := repairs()
	start := time.Now()
	w.inHost(t, []string{"nft", "flush", "ruleset"})
	waitFor(t, "the spoof check back", repairWithin, func() bool {
		return repairs() > before && strings.Contains(w.nftTable("bridge", "moor"), rt.ContainerID)
	})
	t.Logf("spoof check back %v after the flush", time.Since(start))
	if n := strings.Count(w.nftTable("bridge", "moor"), rt.ContainerID); n != 1 {
		t.Fatalf("%d spoof check rules for the container, want 1:\n%s", n, w.nftTable("bridge", "moor"))
	}
	if err := ping(ctr, "10.219.0.1"); err == nil {
		t.Fatal("a container with a spoofed MAC reached the gateway after the repair")
	}
	if err := w.rt.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// A sidecar started while the namespace's networks used nftables keeps only what the
// nftables repair needs. When a later network uses the iptables backend (here after the
// nftables network was removed, as `moor network rm` does it; one backend per host), the
// sidecar says in /healthz that its repair needs more (firewallRestart), and the next
// ADD replaces it with one that keeps CAP_NET_RAW and exec; that one repairs the
// iptables rules after `iptables -t nat -F` (masquerade and the published port work
// again).
func TestSidecarRestartsForIPTables(t *testing.T) {
	w := newWorld(t, firewall.KindNFTables)
	paths := repairHost(t, w)
	dns := map[string]any{"type": "moor-dns", "idleTimeout": "-1s"}
	first := conflist(t, "1.1.0", "nftfirst", w.bridgeConf("mfr0", "10.216.0.0/24", nil), dns)
	_, frt, _ := w.attach(first)
	oldPID := sidecarUID(t, paths.PidFile)
	if capEff(t, oldPID)&(1<<unix.CAP_NET_RAW) != 0 {
		t.Fatal("a sidecar of an nftables namespace kept CAP_NET_RAW")
	}
	if err := w.rt.del(first, frt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	fw, err := firewall.New(firewall.KindNFTables, firewall.Options{NetNS: w.host})
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.RemoveNetwork("nftfirst"); err != nil {
		t.Fatalf("network removal: %v", err)
	}
	// A network of the DNS store stays: the sidecar has no reason to go.
	ipt := conflist(t, "1.1.0", "iptlater", w.bridgeConf("mfr1", "10.217.0.0/24", map[string]any{"firewallBackend": firewall.KindIPTables}), dns)
	web, _, _ := w.attach(ipt, map[string]any{"hostPort": 18112, "containerPort": 80, "protocol": "tcp"})
	newPID := sidecarUID(t, paths.PidFile)
	if newPID == oldPID {
		t.Fatalf("the sidecar %d was not replaced after the first iptables network", oldPID)
	}
	if capEff(t, newPID)&(1<<unix.CAP_NET_RAW) == 0 {
		t.Fatalf("the replacing sidecar %d lacks CAP_NET_RAW", newPID)
	}
	h, err := server.ReadHealth(paths.ControlSocket)
	if err != nil || h.FirewallRestart || h.FirewallRepair == nil {
		t.Fatalf("/healthz of the new sidecar: %+v, %v", h, err)
	}
	serveTCP(t, web, ":80")
	serveTCP(t, w.outside, outsideIP+":9000")
	works := func() error {
		if _, err := dialTCP(w.outside, hostUplinkIP+":18112"); err != nil {
			return fmt.Errorf("published port: %w", err)
		}
		if src, err := dialTCP(web, outsideIP+":9000"); err != nil || src != hostUplinkIP {
			return fmt.Errorf("masquerade: seen as %q, %v", src, err)
		}
		return nil
	}
	if err := works(); err != nil {
		t.Fatal(err)
	}
	before := h.FirewallRepair.Repairs
	w.inHost(t, []string{"iptables", "-t", "nat", "-F"})
	waitFor(t, "repair counted", repairWithin, func() bool {
		h, err := server.ReadHealth(paths.ControlSocket)
		return err == nil && h.FirewallRepair != nil && h.FirewallRepair.Repairs > before && h.FirewallRepair.LastError == ""
	})
	waitFor(t, "packets flow after the flush", repairWithin, func() bool { return works() == nil })
}

// capEff is the effective capability set of process pid.
func capEff(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var eff uint64
	for _, ln := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(ln, "CapEff:"); ok {
			_, _ = fmt.Sscanf(strings.TrimSpace(v), "%x", &eff)
		}
	}
	return eff
}

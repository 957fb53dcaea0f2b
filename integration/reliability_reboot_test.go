package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/plugintest"
)

// Reboot simulation: the state on disk survives (IPAM database, DNS records, a stale
// sidecar pid file), everything in the kernel is gone (the host netns with its bridges,
// veths and containers is deleted and a fresh one made), and so is the runtime's result
// cache. The firewall rules are saved before and restored after, as netfilter-persistent
// or firewalld would, so that stale port mappings are there to collect. One GC per
// network with an empty valid list must give the whole pool back and remove every
// attachment rule and record; the next ADD may take an address a lost container held, and
// gets a sidecar again.
func TestReliabilityReboot(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		dw := &dnsWorld{world: w, dir: t.TempDir()}
		t.Cleanup(dw.stopSidecar)
		nets := []struct{ name, bridge, subnet, first string }{ // first: held before the reboot
			{"rebootA", "mrba0", "10.233.0.0/24", "10.233.0.2"},
			{"rebootB", "mrbb0", "10.233.1.0/24", "10.233.1.2"},
		}
		lists := map[string]*libcni.NetworkConfigList{}
		var containers []ns.NetNS
		port := 18400
		for _, n := range nets {
			lists[n.name] = dw.network(n.name, n.bridge, n.subnet, nil)
			for i := range 3 {
				port++
				ctr := plugintestNetns(t)
				containers = append(containers, ctr)
				rt := attachment(ctr, "eth0")
				rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", fmt.Sprintf("%s-c%d", strings.ToLower(n.name), i)})
				rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": port, "containerPort": 80}}}
				if _, err := w.rt.add(lists[n.name], rt); err != nil {
					t.Fatalf("ADD: %v", err)
				}
			}
		}
		recordsDir := filepath.Join(dw.dir, "records")
		rules := saveRules(t, w)

		// The power goes: the sidecar dies, every namespace with it.
		pid := dw.sidecarPID()
		if pid <= 0 {
			t.Fatal("no sidecar")
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitGone(t, pid)
		for _, ctr := range containers {
			_ = plugintest.DeleteNetns(ctr)
		}
		_ = plugintest.DeleteNetns(w.host)
		_ = plugintest.DeleteNetns(w.outside)

		// The machine comes back: a fresh host netns, the old state files, no cache.
		boot := newWorld(t, w.backend)
		boot.dataDir = w.dataDir
		bootDNS := &dnsWorld{world: boot, dir: dw.dir}
		t.Cleanup(bootDNS.stopSidecar)
		restoreRules(t, boot, rules)
		for _, n := range nets {
			list := bootDNS.network(n.name, n.bridge, n.subnet, nil)
			if got := len(boot.reservations(n.name)); got != 3 {
				t.Fatalf("%s: %d reservations survived, want 3", n.name, got)
			}
			if got := len(boot.fwAttachments(n.name)); got != 3 {
				t.Fatalf("%s: %d attachments' rules restored, want 3", n.name, got)
			}
			if got := recordKeys(t, recordsDir, n.name); len(got) != 3 {
				t.Fatalf("%s: records %v survived, want 3", n.name, got)
			}
			if err := boot.rt.gc(list); err != nil {
				t.Fatalf("GC of %s: %v", n.name, err)
			}
			if r, a, rec := boot.reservations(n.name), boot.fwAttachments(n.name), recordKeys(t, recordsDir, n.name); len(r)+len(a)+len(rec) != 0 {
				t.Errorf("%s after GC: reservations %v, attachment rules %v, records %v", n.name, r, a, rec)
			}
		}
		if strings.Contains(boot.ruleset(), "dport 1840") {
			t.Errorf("a published port is still in the ruleset after GC:\n%s", boot.ruleset())
		}
		// The pool is back: a new container may ask for the address a lost one held, a
		// sidecar starts over the stale pid file, and the name resolves.
		for _, n := range nets {
			list := bootDNS.network(n.name, n.bridge, n.subnet, nil)
			ctr := plugintestNetns(t)
			rt := attachment(ctr, "eth0")
			name := "after-" + strings.ToLower(n.name)
			rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", name}, [2]string{"IP", n.first})
			res, err := boot.rt.add(list, rt)
			if err != nil {
				t.Fatalf("ADD of %s, held before the reboot: %v", n.first, err)
			}
			if ip := ipOf(res); ip != n.first {
				t.Errorf("%s: asked for %s, got %s", n.name, n.first, ip)
			}
			wantA(t, ctr, strings.TrimSuffix(n.first, ".2")+".1", name, n.first)
		}
		if p := bootDNS.sidecarPID(); p <= 0 || p == pid {
			t.Errorf("sidecar pid %d after the reboot (was %d)", p, pid)
		}
	})
}

// saveRules dumps the host's ruleset in the form its restore tool reads.
func saveRules(t *testing.T, w *world) string {
	t.Helper()
	var out []byte
	err := w.host.Do(func(ns.NetNS) error {
		var err error
		if w.backend == firewall.KindIPTables {
			out, err = exec.Command("iptables-save").Output()
		} else {
			out, err = exec.Command("nft", "list", "ruleset").Output()
		}
		return err
	})
	if err != nil {
		t.Fatalf("saving the ruleset: %v", err)
	}
	return string(out)
}

// restoreRules loads a saved ruleset into the world's host.
func restoreRules(t *testing.T, w *world, rules string) {
	t.Helper()
	err := w.host.Do(func(ns.NetNS) error {
		cmd := exec.Command("nft", "-f", "-")
		if w.backend == firewall.KindIPTables {
			cmd = exec.Command("iptables-restore")
		}
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("restoring the ruleset: %v", err)
	}
}

// waitGone waits until pid has exited (a SIGKILLed process is reaped by init).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 250; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d is still there", pid)
}

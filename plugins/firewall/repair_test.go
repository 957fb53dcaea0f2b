package firewall

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// repairDeadline bounds the wait for the rules to be back after a reload.
const repairDeadline = 2 * time.Second

// reloads are the ways a host's firewall is reloaded, per backend: the whole ruleset,
// and moor's objects alone (which leaves a foreign table or chain as it was).
var reloads = map[string][]struct {
	name       string
	cmds       [][]string
	keepsOther bool
}{
	KindNFTables: {
		{"flush ruleset", [][]string{{"nft", "flush", "ruleset"}}, false},
		{"delete moor table", [][]string{{"nft", "delete", "table", "inet", nftTableName}}, true},
	},
	KindIPTables: {
		{"flush all", [][]string{{"iptables", "-F"}, {"iptables", "-t", "nat", "-F"}, {"ip6tables", "-F"}, {"ip6tables", "-t", "nat", "-F"}}, false},
		{"flush moor chains", [][]string{{"iptables", "-F", "MOOR-FORWARD"}, {"iptables", "-t", "nat", "-F", "MOOR-HOSTPORTS"},
			{"iptables", "-t", "nat", "-F", "MOOR-POSTROUTING"}, {"ip6tables", "-F", "MOOR-FORWARD"}}, true},
	},
}

// repairWorld is an isolating network with a published port and masquerade, and a second
// network, in a lab whose host runs a Repairer.
type repairWorld struct {
	l        *lab
	a, b     *labNet
	a1, b1   *container
	repairer *Repairer
}

func newRepairWorld(t *testing.T, l *lab) *repairWorld {
	w := &repairWorld{l: l}
	w.a = l.addNetwork("rpa", nil)
	w.b = l.addNetwork("rpb", nil)
	w.a1, w.b1 = l.addContainer(w.a, "a1"), l.addContainer(w.b, "b1")
	for _, c := range []*container{w.a1, w.b1} {
		serveWhoami(t, c.ns, whoamiPort)
	}
	serveWhoami(t, l.outside, outsidePort)
	att := l.publish(w.a1, PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "tcp"})
	st := State{Dir: t.TempDir()}
	must(t, "save a", st.SaveAttachment(w.a.Network, att))
	must(t, "save b", st.SaveNetwork(w.b.Network))

	w.repairer = &Repairer{Backend: l.fw, State: st, NetNS: l.host, Logf: t.Logf}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.repairer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

// works asserts published port, isolation and masquerade.
func (w *repairWorld) works(t *testing.T, when string) {
	t.Helper()
	expectSeenAs(t, when+": published port", w.l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)
	expectBlocked(t, when+": isolation", w.a1.ns, hostPort(w.b1.ip4, whoamiPort))
	expectSeenAs(t, when+": masquerade", w.a1.ns, "tcp", hostPort(outside4.IP, outsidePort), hostOut4.IP)
}

// settled waits (up to repairDeadline) until the backend finds every stored rule in place.
func (w *repairWorld) settled(t *testing.T, when string) {
	t.Helper()
	att := w.a1.attachment(PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "tcp"})
	var err error
	start := time.Now()
	for end := start.Add(repairDeadline); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		err = errors.Join(w.l.fw.CheckNetwork(w.a.Network), w.l.fw.CheckNetwork(w.b.Network),
			w.l.fw.CheckAttachment(w.a.Network, att))
		if err == nil {
			t.Logf("%s: every rule in place after %s", when, time.Since(start).Round(time.Millisecond))
			return
		}
	}
	t.Fatalf("%s: rules not back within %s: %v (repairer: %+v)", when, repairDeadline, err, w.repairer.Stats())
}

// moorRules is moor's part of the host's firewall, one rule or element a line, without
// handles and counters, in a stable order.
func moorRules(t *testing.T, l *lab) []string {
	t.Helper()
	var lines []string
	if l.kind == KindNFTables {
		for _, ln := range strings.Split(l.inHost("nft", "list", "table", "inet", nftTableName), "\n") {
			if ln = strings.TrimSpace(ln); ln != "" {
				lines = append(lines, ln)
			}
		}
		sort.Strings(lines) // chains are listed in the order they were made
		return lines
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{tableFilter, tableNat} {
			for _, ln := range strings.Split(l.inHost(bin, "-t", table, "-S"), "\n") {
				if (strings.Contains(ln, "MOOR") || strings.Contains(ln, "moor ")) && !strings.Contains(ln, " OTHER ") {
					lines = append(lines, bin+" "+table+" "+ln)
				}
			}
		}
	}
	sort.Strings(lines) // the order of networks in a chain follows the order of repair
	return lines
}

func (w *repairWorld) reload(t *testing.T, cmds [][]string) {
	t.Helper()
	for _, c := range cmds {
		w.l.inHost(c[0], c[1:]...)
	}
}

// reloadAnyway is reload for a burst, where moor's objects may not be back yet (deleting
// a table that is already gone fails).
func (w *repairWorld) reloadAnyway(t *testing.T, cmds [][]string) {
	t.Helper()
	for _, c := range cmds {
		_ = w.l.host.Do(func(ns.NetNS) error { return exec.Command(c[0], c[1:]...).Run() })
	}
}

func TestRepairAfterReload(t *testing.T) {
	for _, kind := range labBackends {
		for _, rl := range reloads[kind] {
			t.Run(kind+"/"+rl.name, func(t *testing.T) {
				l := newLab(t, kind)
				w := newRepairWorld(t, l)
				w.settled(t, "start")
				w.works(t, "before")
				before := moorRules(t, l)
				foreignIntact := addForeignRules(t, l)
				var foreign string
				if l.kind == KindNFTables {
					foreign = l.inHost("nft", "list", "table", "inet", "other")
				} else {
					foreign = l.inHost("iptables", "-S", "OTHER")
				}
				repairsBefore := w.repairer.Stats().Repairs

				w.reload(t, rl.cmds)
				w.settled(t, "after one reload")
				w.works(t, "after one reload")
				if got := w.repairer.Stats(); got.Repairs <= repairsBefore || got.LastRepair.IsZero() {
					t.Fatalf("repair not counted: %+v", got)
				}

				// Ten reloads in a row, then again one at a time: nothing duplicated.
				for range 10 {
					w.reloadAnyway(t, rl.cmds)
				}
				w.settled(t, "after ten reloads in a row")
				for i := range 10 {
					w.reload(t, rl.cmds)
					w.settled(t, fmt.Sprintf("after reload %d", i+1))
				}
				w.works(t, "after twenty reloads")
				if after := moorRules(t, l); !reflect.DeepEqual(before, after) {
					t.Fatalf("moor's rules differ after the reloads:\nbefore (%d):\n%s\nafter (%d):\n%s",
						len(before), strings.Join(before, "\n"), len(after), strings.Join(after, "\n"))
				}
				if rl.keepsOther {
					foreignIntact()
					var now string
					if l.kind == KindNFTables {
						now = l.inHost("nft", "list", "table", "inet", "other")
					} else {
						now = l.inHost("iptables", "-S", "OTHER")
					}
					if now != foreign {
						t.Fatalf("foreign rules changed:\nbefore:\n%s\nafter:\n%s", foreign, now)
					}
				}
			})
		}
	}
}

// TestRepairLeavesDeletedAttachments: an attachment removed from the State (its DEL) is
// not brought back, and a foreign table that the flush took is not recreated.
func TestRepairLeavesDeletedAttachments(t *testing.T) {
	l := newLab(t, KindNFTables)
	w := newRepairWorld(t, l)
	w.settled(t, "start")
	must(t, "forget a1", w.repairer.State.RemoveAttachment(w.a.Name, "ctr-a1", ctrLink))
	must(t, "DelAttachment", l.fw.DelAttachment(w.a.Name, "ctr-a1", ctrLink))
	addForeignRules(t, l)
	l.inHost("nft", "flush", "ruleset")
	for end := time.Now().Add(repairDeadline); errors.Join(l.fw.CheckNetwork(w.a.Network), l.fw.CheckNetwork(w.b.Network)) != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("network not repaired: %+v", w.repairer.Stats())
		}
	}
	expectBlocked(t, "isolation", w.a1.ns, hostPort(w.b1.ip4, whoamiPort))
	if n := attachmentRuleCount(t, l, AttachmentKey{Network: w.a.Name, ContainerID: "ctr-a1", IfName: ctrLink}); n != 0 {
		t.Fatalf("deleted attachment has %d rules again", n)
	}
	if out := l.inHost("nft", "list", "tables"); strings.Contains(out, "other") {
		t.Fatalf("foreign table recreated:\n%s", out)
	}
}

func TestStateRoundTrip(t *testing.T) {
	st := State{Dir: t.TempDir()}
	n := Network{Name: "n/1", Bridge: "br0", Subnets: []*net.IPNet{mustCIDRAddr("10.1.0.0/24")}, IPMasq: true}
	a := Attachment{Network: n.Name, ContainerID: "c1", IfName: "eth0", IPs: []net.IP{net.ParseIP("10.1.0.2").To4()},
		Ports: []PortMapping{{HostPort: 80, ContainerPort: 8080, Protocol: "tcp"}}}
	b := a
	b.ContainerID = "c2"
	must(t, "save a", st.SaveAttachment(n, a))
	must(t, "save b", st.SaveAttachment(n, b))
	got, err := st.Load()
	must(t, "load", err)
	if len(got) != 1 || got[0].Network.Name != n.Name || len(got[0].Attachments) != 2 ||
		!reflect.DeepEqual(got[0].Attachments[0].Ports, a.Ports) {
		t.Fatalf("load: %+v", got)
	}
	must(t, "gc", st.GC(n.Name, []AttachmentKey{b.Key()}))
	got, _ = st.Load()
	if len(got[0].Attachments) != 1 || got[0].Attachments[0].ContainerID != "c2" {
		t.Fatalf("after gc: %+v", got[0].Attachments)
	}
	noPorts := b
	noPorts.Ports = nil
	must(t, "save without ports", st.SaveAttachment(n, noPorts))
	if st.HasAttachment(n.Name, "c2", "eth0") {
		t.Fatal("an attachment without ports stays recorded")
	}
	must(t, "remove network", st.RemoveNetwork(n.Name))
	if got, _ = st.Load(); len(got) != 0 {
		t.Fatalf("after remove: %+v", got)
	}
}

// TestRepairBesideReservation: a host socket on a published port (the runtime's
// reservation, as Podman's conmon holds it) does not stop the repair of a Republish
// backend, while a plain ADD of the port is refused.
func TestRepairBesideReservation(t *testing.T) {
	eachBackend(t, func(t *testing.T, l *lab) {
		n := l.addNetwork("rsv", nil)
		c := l.addContainer(n, "c1")
		serveWhoami(t, c.ns, whoamiPort)
		pm := PortMapping{HostPort: pubPort, ContainerPort: whoamiPort, Protocol: "tcp"}
		att := l.publish(c, pm)
		var ln net.Listener
		must(t, "reserve", l.host.Do(func(ns.NetNS) error {
			var err error
			ln, err = net.Listen("tcp", hostPort(hostOut4.IP, pubPort))
			return err
		}))
		defer ln.Close()
		st := State{Dir: t.TempDir()}
		must(t, "save", st.SaveAttachment(n.Network, att))
		l.inHost("nft", "flush", "ruleset")
		if l.kind == KindIPTables {
			l.inHost("iptables", "-t", "nat", "-F")
		}
		if err := l.fw.AddAttachment(n.Network, att); !isPortInUse(err) {
			t.Fatalf("plain ADD beside a host socket: %v, want port in use", err)
		}
		fw, err := New(l.kind, Options{NetNS: l.host, LockFile: filepath.Join(t.TempDir(), "fw.lock"), Republish: true})
		must(t, "new", err)
		r := &Repairer{Backend: fw, State: st, NetNS: l.host}
		fixed, err := r.Once()
		must(t, "repair", err)
		if len(fixed) == 0 {
			t.Fatal("nothing repaired")
		}
		expectSeenAs(t, "published port after the repair", l.outside, "tcp", hostPort(hostOut4.IP, pubPort), outside4.IP)
	})
}

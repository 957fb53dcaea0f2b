package firewall

import (
	"fmt"
	"strings"
	"testing"
)

// TestPortReadsScopedToAttachment: with other attachments' ports published, an
// attachment's ADD, re-ADD and DEL find conflicts and their own elements by key, without
// listing the port maps whole, and behave as with a whole read (packets, conflicts); a
// record that disagrees with the kernel (a process that died between the two) makes the
// DEL read the maps whole and still remove what the attachment has.
func TestPortReadsScopedToAttachment(t *testing.T) {
	requireRoot(t)
	l := newLab(t, KindNFTables)
	b := l.fw.(*nftBackend)
	n := l.addNetwork("scope", nil)
	const base = pubPort + 10 // clear of pubPortHost
	cs := make([]*container, 6)
	for i := range cs {
		cs[i] = l.addContainer(n, string(rune('a'+i)))
		serveWhoami(t, cs[i].ns, whoamiPort)
	}
	for i := range 3 {
		l.publish(cs[i], PortMapping{HostPort: base + i, ContainerPort: whoamiPort})
	}
	// A port on a given address (the map read whole, few hosts have such ports).
	l.publish(cs[3], PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()})
	reads := func(what string, want int) {
		t.Helper()
		if b.wholePortReads != want {
			t.Fatalf("%s: port maps read whole %d times, want %d", what, b.wholePortReads, want)
		}
	}
	b.wholePortReads = 0

	// New attachment: its port works.
	a4 := l.publish(cs[4], PortMapping{HostPort: base + 4, ContainerPort: whoamiPort})
	expectSeenAs(t, "new attachment's port", l.outside, "tcp", hostPort(hostOut4.IP, base+4), outside4.IP)
	reads("ADD", 0)

	// Conflicts found by key (any address vs any, a given address vs any) and from the
	// map of given addresses (any vs a given address); each names its holder.
	for _, tc := range []struct {
		what   string
		pm     PortMapping
		holder string
	}{
		{"any address, taken on any", PortMapping{HostPort: base + 1, ContainerPort: whoamiPort}, "ctr-b"},
		{"given address, taken on any", PortMapping{HostPort: base + 2, ContainerPort: whoamiPort, HostIP: hostOut4.IP.String()}, "ctr-c"},
		{"any address, taken on a given one", PortMapping{HostPort: pubPortHost, ContainerPort: whoamiPort}, "ctr-d"},
	} {
		err := l.fw.AddAttachment(n.Network, cs[5].attachment(tc.pm))
		if !isPortInUse(err) || !strings.Contains(err.Error(), tc.holder) {
			t.Fatalf("%s: got %v, want port in use by %s", tc.what, err, tc.holder)
		}
	}
	reads("refused ADDs", 0)

	// Re-ADD with another port: the old element goes (found through the record).
	l.publish(cs[0], PortMapping{HostPort: base + 5, ContainerPort: whoamiPort})
	expectRefused(t, "replaced port", l.outside, hostPort(hostOut4.IP, base))
	expectSeenAs(t, "replacing port", l.outside, "tcp", hostPort(hostOut4.IP, base+5), outside4.IP)
	reads("re-ADD", 0)

	// DEL by the record; a DEL of an attachment without ports reads nothing whole either.
	must(t, "DelAttachment e", l.fw.DelAttachment(n.Name, a4.ContainerID, a4.IfName))
	expectRefused(t, "deleted port", l.outside, hostPort(hostOut4.IP, base+4))
	must(t, "DelAttachment f (no ports)", l.fw.DelAttachment(n.Name, "ctr-f", ctrLink))
	reads("DEL", 0)

	// A record that names other ports than the kernel has (the process died after writing
	// it): the DEL reads whole and removes the element the kernel has.
	st, err := b.opts.stateHere()
	must(t, "state", err)
	stale := cs[1].attachment(PortMapping{HostPort: base + 9, ContainerPort: whoamiPort})
	_, err = st.saveAttachment(KindNFTables, n.Network, stale)
	must(t, "write a stale record", err)
	must(t, "DelAttachment b", l.fw.DelAttachment(n.Name, stale.ContainerID, stale.IfName))
	reads("DEL with a stale record", 1)
	expectRefused(t, "port of the stale-record attachment", l.outside, hostPort(hostOut4.IP, base+1))
	// A DEL that died after forgetting (the record marked deleting) and before removing
	// the element: the repeated DEL finds the element through the deleting record, and
	// no loader (so no repair) sees the record meanwhile.
	must(t, "mark c deleting", st.markDeleting(cs[2].attachment().Key()))
	nets, err := st.Load()
	must(t, "Load", err)
	for _, sn := range nets {
		for _, a := range sn.Attachments {
			if a.ContainerID == "ctr-c" {
				t.Fatal("State.Load lists an attachment marked deleting")
			}
		}
	}
	must(t, "DelAttachment c, repeated", l.fw.DelAttachment(n.Name, "ctr-c", ctrLink))
	reads("DEL after a forget", 1)
	expectRefused(t, "port of c after the repeated DEL", l.outside, hostPort(hostOut4.IP, base+2))
	if rec, _, err := st.attachmentRecord(cs[2].attachment().Key()); err != nil || rec != nil {
		t.Fatalf("record of c after its DEL: %v, %v", rec, err)
	}
	keys, err := l.fw.Attachments(n.Name)
	must(t, "Attachments", err)
	for _, k := range keys {
		if k.ContainerID == "ctr-b" || k.ContainerID == "ctr-c" || k.ContainerID == "ctr-e" {
			t.Fatalf("Attachments after DELs = %v: %s left", keys, k)
		}
	}
	// The others are untouched.
	expectSeenAs(t, "other attachment", l.outside, "tcp", hostPort(hostOut4.IP, base+5), outside4.IP)
}

// TestPortBatchesKeepTheRecord: an ADD with published ports whose network the record
// holds skips the network's reads, and its own batch (port-map elements only) moves the
// record to the new generation, as a DEL's does; so a run of ADDs with ports reads the
// network once. A commit by anyone else (here a chain of the network flushed) makes the
// next ADD read, find the damage and repair it.
func TestPortBatchesKeepTheRecord(t *testing.T) {
	requireRoot(t)
	l := newLab(t, KindNFTables)
	b := l.fw.(*nftBackend)
	n := l.addNetwork("keep", nil) // creates the rules
	cs := make([]*container, 4)
	for i := range cs {
		cs[i] = l.addContainer(n, string(rune('a'+i)))
		serveWhoami(t, cs[i].ns, whoamiPort)
	}
	const base = pubPort + 20
	b.networkReads = 0
	l.publish(cs[0], PortMapping{HostPort: base, ContainerPort: whoamiPort}) // reads, finds it in place, records
	if b.networkReads != 1 {
		t.Fatalf("first ADD with ports read the network %d times, want 1", b.networkReads)
	}
	if _, entries := b.readVerified(); entries[n.Name] != fingerprint(n.Network) {
		t.Fatalf("no record after an ADD that found the network in place: %v", entries)
	}
	l.publish(cs[1], PortMapping{HostPort: base + 1, ContainerPort: whoamiPort})
	must(t, "DelAttachment a", l.fw.DelAttachment(n.Name, "ctr-a", ctrLink))
	l.publish(cs[2], PortMapping{HostPort: base + 2, ContainerPort: whoamiPort})
	must(t, "EnsureNetwork", l.fw.EnsureNetwork(n.Network))
	if b.networkReads != 1 {
		t.Fatalf("ADDs and a DEL after the record read the network %d times in all, want 1", b.networkReads)
	}
	rec, _ := b.readVerified()
	if gen := generation(t, b); rec.gen != gen {
		t.Fatalf("record at generation %d, ruleset at %d", rec.gen, gen)
	}
	expectSeenAs(t, "port of b", l.outside, "tcp", hostPort(hostOut4.IP, base+1), outside4.IP)
	expectSeenAs(t, "port of c", l.outside, "tcp", hostPort(hostOut4.IP, base+2), outside4.IP)
	expectRefused(t, "port of a after its DEL", l.outside, hostPort(hostOut4.IP, base))
	must(t, "CheckNetwork", l.fw.CheckNetwork(n.Network))

	// Someone else commits: the network's forward chain loses its rules.
	l.inHost("nft", "flush", "chain", "inet", nftTableName, fwdChainName(n.Name))
	if err := l.fw.CheckNetwork(n.Network); err == nil {
		t.Fatal("CheckNetwork passes with the network's chain flushed")
	}
	l.publish(cs[3], PortMapping{HostPort: base + 3, ContainerPort: whoamiPort})
	if b.networkReads != 2 {
		t.Fatalf("ADD after another's commit read the network %d times in all, want 2", b.networkReads)
	}
	must(t, "CheckNetwork after the repairing ADD", l.fw.CheckNetwork(n.Network))
	expectSeenAs(t, "port of d", l.outside, "tcp", hostPort(hostOut4.IP, base+3), outside4.IP)
}

// TestRepairCheckReadsPortsOnce: the Repairer's check of many attachments reads the port
// maps once, and still finds exactly the attachment whose element someone deleted.
func TestRepairCheckReadsPortsOnce(t *testing.T) {
	requireRoot(t)
	l := newLab(t, KindNFTables)
	b := l.fw.(*nftBackend)
	n := l.addNetwork("once", nil)
	const base = pubPort + 30
	var keys []AttachmentKey
	for i := range 5 {
		a := l.publish(l.addContainer(n, string(rune('a'+i))), PortMapping{HostPort: base + i, ContainerPort: whoamiPort})
		keys = append(keys, a.Key())
	}
	st, err := b.opts.stateHere()
	must(t, "state", err)
	nets, err := st.Load()
	must(t, "Load", err)
	b.wholePortReads = 0
	mn, ma := missing(b, nets)
	if len(mn) != 0 || len(ma) != 0 || b.wholePortReads != 1 {
		t.Fatalf("check of an intact ruleset: networks %v, attachments %v missing, %d whole reads (want none, none, 1)", mn, ma, b.wholePortReads)
	}
	// Someone deletes c's element.
	l.inHost("nft", "delete", "element", "inet", nftTableName, setPorts4Any, fmt.Sprintf("{ tcp . %d }", base+2))
	_, ma = missing(b, nets)
	if len(ma) != 1 || !ma[keys[2]] {
		t.Fatalf("after deleting c's element: missing %v, want only %v", ma, keys[2])
	}
}

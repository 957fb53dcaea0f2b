package firewall

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/nftables"
)

// withLockHeld runs fn while another holder keeps the host lock, with b's lock timeout
// shortened: an EnsureNetwork that needs the lock fails with *LockTimeoutError.
func withLockHeld(t *testing.T, b *nftBackend, fn func()) {
	t.Helper()
	unlock, err := hostLock(b.opts.LockFile, time.Second)
	must(t, "take the host lock", err)
	defer unlock()
	saved := b.opts.LockTimeout
	b.opts.LockTimeout = 100 * time.Millisecond
	defer func() { b.opts.LockTimeout = saved }()
	fn()
}

// An EnsureNetwork that verified a network in place records it; the next one at the
// same generation trusts the record (no reads, no lock), and any commit, a flushed
// ruleset included, or a changed network sends it back to reading and repairing.
func TestEnsureNetworkVerifiedRecord(t *testing.T) {
	l := newLab(t, KindNFTables)
	n := l.addNetwork("verified", nil) // creates the rules: a commit, so no record yet
	b := l.fw.(*nftBackend)
	if _, entries := b.readVerified(); entries["verified"] != "" {
		t.Fatalf("a record after the committing EnsureNetwork: %v", entries)
	}
	must(t, "EnsureNetwork in place", l.fw.EnsureNetwork(n.Network))
	if _, entries := b.readVerified(); entries["verified"] != fingerprint(n.Network) {
		t.Fatalf("no record after verifying the network in place: %v", entries)
	}

	// Recorded: no lock, no commit.
	before := generation(t, b)
	withLockHeld(t, b, func() {
		must(t, "EnsureNetwork with the record", l.fw.EnsureNetwork(n.Network))
	})
	if after := generation(t, b); after != before {
		t.Errorf("EnsureNetwork with the record committed (generation %d -> %d)", before, after)
	}

	// The same network with another option is not the recorded one: it takes the lock,
	// and once applied CHECK finds its rules.
	masqOff := n.Network
	masqOff.IPMasq = false
	withLockHeld(t, b, func() {
		var lt *LockTimeoutError
		if err := l.fw.EnsureNetwork(masqOff); !errors.As(err, &lt) {
			t.Errorf("EnsureNetwork of a changed network with the lock held: %v, want a lock timeout", err)
		}
	})
	must(t, "EnsureNetwork changed", l.fw.EnsureNetwork(masqOff))
	must(t, "CheckNetwork changed", l.fw.CheckNetwork(masqOff))
	must(t, "EnsureNetwork back", l.fw.EnsureNetwork(n.Network))
	must(t, "EnsureNetwork back, in place", l.fw.EnsureNetwork(n.Network))
	if _, entries := b.readVerified(); entries["verified"] != fingerprint(n.Network) {
		t.Fatalf("no record after verifying the network in place again: %v", entries)
	}

	// Someone deletes moor's whole table (a flushed ruleset): the record is stale, the
	// next EnsureNetwork rebuilds every rule.
	c, done, err := b.conn()
	must(t, "conn", err)
	c.DelTable(&nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet})
	must(t, "delete moor's table", c.Flush())
	done()
	if err := l.fw.CheckNetwork(n.Network); err == nil {
		t.Fatal("CheckNetwork passes with moor's table deleted")
	}
	must(t, "EnsureNetwork after the flush", l.fw.EnsureNetwork(n.Network))
	must(t, "CheckNetwork after the flush", l.fw.CheckNetwork(n.Network))
}

// A record made in another netns (another cookie) is never trusted, whatever its
// generation number.
func TestEnsureNetworkVerifiedRecordOtherNetns(t *testing.T) {
	l := newLab(t, KindNFTables)
	n := l.addNetwork("othernetns", nil)
	b := l.fw.(*nftBackend)
	must(t, "EnsureNetwork in place", l.fw.EnsureNetwork(n.Network))
	rec, entries := b.readVerified()
	if entries["othernetns"] == "" {
		t.Fatal("no record")
	}
	// The same record, as if written in another netns at the current generation.
	forged := genStamp{cookie: rec.cookie + 1, gen: generation(t, b)}
	content := fmt.Sprintf("%s\nothernetns %s\n", forged, entries["othernetns"])
	must(t, "forge record", os.WriteFile(filepath.Join(filepath.Dir(b.opts.LockFile), verifiedFileName), []byte(content), 0o600))
	withLockHeld(t, b, func() {
		var lt *LockTimeoutError
		if err := l.fw.EnsureNetwork(n.Network); !errors.As(err, &lt) {
			t.Errorf("EnsureNetwork trusted a record of another netns: %v", err)
		}
	})
	must(t, "EnsureNetwork", l.fw.EnsureNetwork(n.Network))
	if rec2, _ := b.readVerified(); rec2.cookie != rec.cookie {
		t.Errorf("record cookie %d after re-verification, want this netns's %d", rec2.cookie, rec.cookie)
	}
}

// The probe's own socket reads the same netns cookie and generation as an operation's
// connection, and follows a commit.
func TestProbeStampMatchesConn(t *testing.T) {
	l := newLab(t, KindNFTables)
	b := l.fw.(*nftBackend)
	before := stampNow(t, b)
	got, err := b.probeStamp()
	must(t, "probeStamp", err)
	if got != before {
		t.Fatalf("probeStamp %v, connection %v", got, before)
	}
	l.addNetwork("probestamp", nil) // commits
	after, err := b.probeStamp()
	must(t, "probeStamp after a commit", err)
	if after.cookie != before.cookie || after.gen == before.gen {
		t.Fatalf("probeStamp after a commit %v, before %v: want the same cookie and another generation", after, before)
	}
	if now := stampNow(t, b); after != now {
		t.Fatalf("probeStamp %v, connection %v after the commit", after, now)
	}
	// The host's own namespace is another netns: another cookie.
	host := &nftBackend{opts: b.opts}
	host.opts.NetNS = nil
	hs, err := host.probeStamp()
	must(t, "probeStamp in the test's own netns", err)
	if hs.cookie == before.cookie {
		t.Fatalf("the same cookie %d in the lab's netns and the test's own", hs.cookie)
	}
}

// Every field of a Network is part of its fingerprint: a network that differs in any
// one field is never taken for the recorded one.
func TestFingerprintCoversEveryField(t *testing.T) {
	base := Network{Name: "fp", Bridge: "br-fp", Subnets: []*net.IPNet{{IP: net.IPv4(10, 9, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}}}
	fp := fingerprint(base)
	if fp == "" {
		t.Fatal("no fingerprint")
	}
	if fingerprint(base) != fp {
		t.Fatal("fingerprint not deterministic")
	}
	seen := map[string]string{fp: "base"}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		n := base
		n.Subnets = slices.Clone(base.Subnets)
		v := reflect.ValueOf(&n).Elem().Field(i)
		switch f.Type.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		default:
			switch f.Type {
			case reflect.TypeOf([]*net.IPNet{}):
				v.Set(reflect.Append(v, reflect.ValueOf(&net.IPNet{IP: net.ParseIP("fd00::"), Mask: net.CIDRMask(64, 128)})))
			case reflect.TypeOf([]net.IP{}):
				v.Set(reflect.Append(v, reflect.ValueOf(net.IPv4(10, 9, 0, 1).To4())))
			case reflect.TypeOf(net.IP{}):
				v.Set(reflect.ValueOf(net.IPv4(192, 0, 2, 1).To4()))
			default:
				t.Fatalf("field %s of type %s: teach this test to change it", f.Name, f.Type)
			}
		}
		got := fingerprint(n)
		if got == "" {
			t.Fatalf("no fingerprint with %s changed", f.Name)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("changing %s gives the fingerprint of %s", f.Name, other)
		}
		seen[got] = f.Name
	}
	// Where one value ends is part of it: moving a character between two strings is
	// another network.
	a, b := base, base
	a.Name, a.Bridge = "ab", "c"
	b.Name, b.Bridge = "a", "bc"
	if fingerprint(a) == fingerprint(b) {
		t.Error("Name/Bridge \"ab\"/\"c\" and \"a\"/\"bc\" have the same fingerprint")
	}
}

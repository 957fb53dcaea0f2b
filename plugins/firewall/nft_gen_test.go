package firewall

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

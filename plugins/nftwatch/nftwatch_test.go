package nftwatch

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/plugintest"
)

// quiet is how long the test watches for a signal that must not come.
const quiet = time.Second

// TestOwnCommitsNotSignalled: in a namespace of its own, a transaction committed by nft
// is signalled, one committed by a program named moor-* is not (the same nft binary,
// copied under a moor name: the kernel names the committing process in NEWGEN), and the
// watcher still signals the next foreign transaction.
func TestOwnCommitsNotSignalled(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft is not installed")
	}
	netns := plugintest.Netns(t, "moornw")
	own := filepath.Join(t.TempDir(), "moor-nfttest")
	b, err := os.ReadFile(nft)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(own, b, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := Open(int(netns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	wake := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- w.Run(wake) }()
	defer func() {
		w.Stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		w.Close()
	}()

	run := func(prog string, args ...string) {
		t.Helper()
		err := netns.Do(func(ns.NetNS) error {
			out, err := exec.Command(prog, args...).CombinedOutput()
			if err != nil {
				t.Errorf("%s %v: %v: %s", prog, args, err, out)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, signalled bool) {
		t.Helper()
		wait := quiet
		if signalled {
			wait = 10 * time.Second // a generous "eventually"
		}
		select {
		case <-wake:
			if !signalled {
				t.Fatalf("%s: signalled", what)
			}
		case <-time.After(wait):
			if signalled {
				t.Fatalf("%s: not signalled within %s", what, wait)
			}
		}
	}
	run(nft, "add", "table", "inet", "foreign1")
	expect("a table added by nft", true)
	run(own, "add", "table", "inet", "own1")
	run(own, "add", "chain", "inet", "own1", "c")
	expect("a table and chain added by moor-nfttest", false)
	run(nft, "flush", "ruleset")
	expect("nft flush ruleset", true)
}

func TestOwnCommit(t *testing.T) {
	for name, want := range map[string]bool{"moor": true, "moor-bridge": true, "moor-overlay": true, "moor-dns": true,
		"": false, "nft": false, "moorish": false, "iptables-nft-re": false, "firewalld": false} {
		if got := OwnCommit(name); got != want {
			t.Errorf("OwnCommit(%q) = %v, want %v", name, got, want)
		}
	}
}

package iptexec

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/moornet/moor/plugins/plugintest"
)

// TestRunnerAgainstKernel runs each family's commands in a fresh namespace: listings show
// what was created, and the errors of a missing rule or chain and of a chain created
// twice are told apart from other failures.
func TestRunnerAgainstKernel(t *testing.T) {
	plugintest.RequireRoot(t)
	for _, f := range []Family{IPv4, IPv6} {
		r, err := New(f, 5*time.Second)
		if err != nil {
			t.Skipf("no %d-family iptables: %v", f, err)
		}
		netns := plugintest.Netns(t, "slimipt")
		err = netns.Do(func(ns.NetNS) error {
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("IPv%d: %v", f, err)
				}
			}
			must(r.Run("-t", "filter", "-N", "MOOR-T"))
			err := r.Run("-t", "filter", "-N", "MOOR-T")
			if !IsExist(err) || IsNotExist(err) {
				t.Errorf("IPv%d: chain created twice: %v, want an exists error", f, err)
			}
			must(r.Run("-t", "filter", "-A", "MOOR-T", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"))
			must(r.Restore("*filter\n-A MOOR-T -p udp --dport 53 -m comment --comment \"moor test\" -j ACCEPT\nCOMMIT\n"))
			out, err := r.Output("-t", "filter", "-S", "MOOR-T")
			must(err)
			for _, want := range []string{"-N MOOR-T", "--dport 80 -j ACCEPT", "--dport 53 -m comment --comment \"moor test\" -j ACCEPT"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("IPv%d: listing lacks %q:\n%s", f, want, out)
				}
			}
			must(r.Run("-t", "filter", "-D", "MOOR-T", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"))
			for _, args := range [][]string{
				{"-t", "filter", "-D", "MOOR-T", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"}, // rule gone
				{"-t", "filter", "-D", "MOOR-NONE", "-j", "ACCEPT"},                            // chain missing
				{"-t", "filter", "-F", "MOOR-NONE"},
				{"-t", "filter", "-X", "MOOR-NONE"},
				{"-t", "filter", "-A", "MOOR-T", "-j", "MOOR-NONE"}, // jump to a missing chain
			} {
				err := r.Run(args...)
				if !IsNotExist(err) || IsExist(err) {
					t.Errorf("IPv%d %v: %v, want a does-not-exist error", f, args, err)
				}
			}
			// Other failures are neither.
			err = r.Run("-t", "filter", "-A", "MOOR-T", "--no-such-option")
			var e *Error
			if err == nil || !strings.Contains(err.Error(), "--no-such-option") || IsExist(err) || IsNotExist(err) {
				t.Errorf("IPv%d: bad option: %v", f, err)
			}
			if err != nil && (!errors.As(err, &e) || e.Status == 0) {
				t.Errorf("IPv%d: bad option: %v is not an *Error with a status", f, err)
			}
			must(r.Run("-t", "filter", "-F", "MOOR-T"))
			must(r.Run("-t", "filter", "-X", "MOOR-T"))
			out, err = r.Output("-t", "filter", "-S")
			must(err)
			if strings.Contains(string(out), "MOOR-T") {
				t.Errorf("IPv%d: chain left after -X:\n%s", f, out)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestWaitArgument: the lock wait is rounded up to whole seconds, and zero waits without
// a bound (a bare --wait).
func TestWaitArgument(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("no iptables")
	}
	for _, c := range []struct {
		wait time.Duration
		want []string
	}{
		{0, []string{"-S", "--wait"}},
		{time.Second, []string{"-S", "--wait", "1"}},
		{1500 * time.Millisecond, []string{"-S", "--wait", "2"}},
		{30 * time.Second, []string{"-S", "--wait", "30"}},
	} {
		r, err := New(IPv4, c.wait)
		if err != nil {
			t.Fatal(err)
		}
		got := r.withWait([]string{"-S"})
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("wait %v: %q, want %q", c.wait, got, c.want)
		}
	}
}

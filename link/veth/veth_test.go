package veth

import (
	"strings"
	"testing"
)

// TestPrefixesApart: GC of one driver must never take another driver's veths, so no
// prefix may start another, and altnames stay within the kernel's 128 bytes.
func TestPrefixesApart(t *testing.T) {
	namers := []Namer{Bridge, Overlay}
	for i, a := range namers {
		for j, b := range namers {
			if i != j && strings.HasPrefix(b.Prefix, a.Prefix) {
				t.Errorf("prefix %q starts with %q: GC of one driver would take the other's veths", b.Prefix, a.Prefix)
			}
		}
		if got := a.AltName("net", "ctr", "eth0"); !strings.HasPrefix(got, a.Prefix) || len(got) != len(a.Prefix)+2*hashLen {
			t.Errorf("AltName = %q", got)
		}
		if a.AltName("net", "ctr", "eth0") == a.AltName("net", "ctr", "eth1") {
			t.Errorf("%q: two attachments share an altname", a.Prefix)
		}
	}
}

package view

import (
	"testing"

	"github.com/moornet/moor/conflist"
)

// An overlay network spans hosts: Docker's "global"; every other driver's is "local".
func TestScopeOf(t *testing.T) {
	for driver, want := range map[string]string{
		conflist.DriverOverlay: ScopeGlobal, conflist.DriverBridge: ScopeLocal, "macvlan": ScopeLocal, "host": ScopeLocal, "none": ScopeLocal,
	} {
		if got := scopeOf(driver); got != want {
			t.Errorf("scope of a %s network: %q, want %q", driver, got, want)
		}
	}
}

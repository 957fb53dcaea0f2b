package plugins

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/utils"
)

// nameCases are names around every rule of the spec's checks.
var nameCases = []string{"", "a", "A", "0", "_a", ".a", "-a", "a_b.c-d", "a b", "a/b", "a:b", "a\tb", "a\nb",
	"é", "aé", "a\x00", ".", "..", "...", strings.Repeat("x", 15), strings.Repeat("x", 16), "abc\u00a0",
	"abc\u2028", "ab\xff", "eth0", "net1.10", "0123456789abcdef", "moor-bridge_1"}

// TestSpecNameMatchesLibcni: SpecName accepts exactly the container IDs and network
// names libcni's validators accept.
func TestSpecNameMatchesLibcni(t *testing.T) {
	for _, s := range nameCases {
		if got, want := SpecName(s), utils.ValidateContainerID(s) == nil; got != want {
			t.Errorf("SpecName(%q) = %v, libcni's container ID check says %v", s, got, want)
		}
		if got, want := SpecName(s), utils.ValidateNetworkName(s) == nil; got != want {
			t.Errorf("SpecName(%q) = %v, libcni's network name check says %v", s, got, want)
		}
	}
}

// TestSpecIfNameMatchesLibcni: same verdict and message as libcni's interface name check.
func TestSpecIfNameMatchesLibcni(t *testing.T) {
	for _, s := range nameCases {
		err, e := SpecIfName(s), utils.ValidateInterfaceName(s)
		switch {
		case (err == nil) != (e == nil):
			t.Errorf("SpecIfName(%q) = %v, libcni says %v", s, err, e)
		case err != nil && err.Error() != e.Msg:
			t.Errorf("SpecIfName(%q) = %q, libcni's message is %q", s, err, e.Msg)
		}
	}
}

// Package fault holds moor's test-only fault points: named places inside ADD, DEL and the
// stores where a test can make the operation fail, or make the process SIGKILL itself, to
// prove that nothing is left half-done. It is a leaf package (no moor imports) so that
// every layer, the framework and the stores it calls in process alike, shares one
// variable and one format.
//
// Points are armed only through the environment variable Env; outside tests Check always
// returns nil after one getenv.
package fault

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/moornet/moor/plugins/codes"
)

// Env names the variable that arms fault points: a comma-separated list of point names,
// each optionally followed by ":kill" (the process SIGKILLs itself at that point) or
// ":error" (the default: the point returns an error, as a failing kernel call would).
// Example: MOOR_TEST_FAULT=bridge/after-veth,ipam/after-reserve:kill
const Env = "MOOR_TEST_FAULT"

// Check returns an error when point is armed in getenv's Env, kills the process when it is
// armed with ":kill", and returns nil otherwise.
func Check(getenv func(string) string, point string) error {
	spec := getenv(Env)
	if spec == "" {
		return nil
	}
	for _, item := range strings.Split(spec, ",") {
		name, mode, _ := strings.Cut(strings.TrimSpace(item), ":")
		if name != point {
			continue
		}
		if mode == "kill" {
			_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught; wait for it to land
		}
		return codes.New(codes.Internal, fmt.Sprintf("fault injected at %s", point))
	}
	return nil
}

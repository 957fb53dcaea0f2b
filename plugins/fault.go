package plugins

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/moornet/moor/plugins/codes"
)

// FaultEnv names the test-only variable that arms fault points: a comma-separated list
// of point names, each optionally followed by ":kill" (the process SIGKILLs itself at that
// point) or ":error" (the default: the point returns an error, as a failing kernel call
// would). Example: MOOR_TEST_FAULT=bridge/after-veth,ipam/after-reserve:kill
const FaultEnv = "MOOR_TEST_FAULT"

// Fault is a named point inside ADD or DEL. It returns an error when the point is armed
// for the call and nil otherwise (always, outside tests).
func (c *Call) Fault(point string) error { return Fault(c.Getenv, point) }

// Fault checks a fault point with a getenv of the caller's choice (packages that have no
// Call use os.Getenv).
func Fault(getenv func(string) string, point string) error {
	spec := getenv(FaultEnv)
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
			select {} // never reached: SIGKILL cannot be caught
		}
		return codes.New(codes.Internal, fmt.Sprintf("fault injected at %s", point))
	}
	return nil
}

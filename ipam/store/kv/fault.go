package kv

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/moornet/moor/plugins/codes"
)

// FaultEnv arms test-only fault points: a comma-separated list of point names, each
// optionally followed by ":kill" (the process SIGKILLs itself there) or ":error" (the
// default: the transaction fails there). It is the variable and format of the plugin
// framework's fault points; this package cannot import the framework (the framework
// calls IPAM in process), so it reads the variable itself.
const FaultEnv = "MOOR_TEST_FAULT"

// FaultAfterReserve fires inside Allocate's transaction after every address is
// reserved and before the attachment is recorded.
const FaultAfterReserve = "ipam/after-reserve"

func faultPoint(point string) error {
	spec := os.Getenv(FaultEnv)
	if spec == "" {
		return nil
	}
	for _, item := range strings.Split(spec, ",") {
		name, mode, _ := strings.Cut(strings.TrimSpace(item), ":")
		if name != point {
			continue
		}
		if mode == "kill" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught; wait for it to land
		}
		return codes.New(codes.Internal, fmt.Sprintf("fault injected at %s", point))
	}
	return nil
}

package kv

import (
	"os"

	"github.com/moornet/moor/plugins/fault"
)

// FaultEnv arms test-only fault points (package fault).
const FaultEnv = fault.Env

// FaultAfterReserve fires inside Allocate's transaction after every address is
// reserved and before the attachment is recorded.
const FaultAfterReserve = "ipam/after-reserve"

func faultPoint(point string) error { return fault.Check(os.Getenv, point) }

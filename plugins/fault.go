package plugins

import "github.com/moornet/moor/plugins/fault"

// FaultEnv names the test-only variable that arms fault points (see package fault).
const FaultEnv = fault.Env

// Fault is a named point inside ADD or DEL. It returns an error when the point is armed
// for the call and nil otherwise (always, outside tests).
func (c *Call) Fault(point string) error { return fault.Check(c.Getenv, point) }

// Fault checks a fault point with a getenv of the caller's choice.
func Fault(getenv func(string) string, point string) error { return fault.Check(getenv, point) }

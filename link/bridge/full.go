package bridge

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// MaxPorts is how many ports one Linux bridge holds. The kernel numbers a bridge's ports
// in 10 bits (BR_MAX_PORTS, 1024 numbers) and never hands out number 0, so the 1024th port
// is refused with EXFULL ("exchange full"), whatever kind of link it is. moor's drivers
// put nothing but containers' veths on their bridges (moor-overlay routes to its VXLAN
// device), so a network takes MaxPorts containers per bridge.
const MaxPorts = 1023

// FullError is the kernel's refusal of a new port because the bridge already has
// MaxPorts. It surfaces as code 112 (codes.BridgeFull): a retry cannot succeed while the
// network keeps its containers, so the message says to use another network.
type FullError struct {
	Bridge  string
	Network string // the CNI network the bridge carries; "" when the caller has none
	Err     error  // the kernel's answer (EXFULL), wrapped by the step that met it
}

func (e *FullError) Error() string {
	network := ""
	if e.Network != "" {
		network = fmt.Sprintf("network %q: ", e.Network)
	}
	return fmt.Sprintf("%sbridge %s is full: a Linux bridge holds at most %d ports (the kernel's limit, BR_MAX_PORTS); attach the container to another network: %v",
		network, e.Bridge, MaxPorts, e.Err)
}

// CNICode is codes.BridgeFull.
func (e *FullError) CNICode() uint { return codes.BridgeFull }

func (e *FullError) Unwrap() error { return e.Err }

// PortError is err as a FullError when it is the kernel's EXFULL, else err unchanged: for
// the step that puts a link on the bridge named bridge.
func PortError(err error, bridge, network string) error {
	if errors.Is(err, unix.EXFULL) {
		return &FullError{Bridge: bridge, Network: network, Err: err}
	}
	return err
}

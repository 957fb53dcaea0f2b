package firewall

import (
	"fmt"
	"strings"

	"github.com/moornet/moor/plugins/codes"
)

// InvalidError reports a field of Network, Attachment or Options with a wrong value
// (code 7, invalid network config).
type InvalidError struct {
	Field  string
	Value  string
	Reason string
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("firewall: %s %q: %s", e.Field, e.Value, e.Reason)
}

// CNICode implements codes.Coded.
func (e *InvalidError) CNICode() uint { return codes.InvalidNetworkConfig }

func invalid(field, value, reason string) error {
	return &InvalidError{Field: field, Value: value, Reason: reason}
}

// PortInUseError reports a host port that another attachment already publishes, or
// that a socket of the host listens on (code 103).
type PortInUseError struct {
	Protocol string
	HostIP   string // "" when the request is for every address of the family
	HostPort int
	Family   int           // 4 or 6
	Holder   AttachmentKey // who has it; equal to the requester for a duplicate within one request
	// Socket, when set, is a listening socket of the host that holds the port, instead of
	// an attachment: its address and, when found, its process.
	Socket *HostSocket
}

func (e *PortInUseError) Error() string {
	host := e.HostIP
	if host == "" {
		host = "*"
	}
	if e.Socket != nil {
		return fmt.Sprintf("firewall: host port %s %s:%d (IPv%d) is already in use on the host: %s",
			e.Protocol, host, e.HostPort, e.Family, e.Socket)
	}
	return fmt.Sprintf("firewall: host port %s %s:%d (IPv%d) is already published by attachment %s",
		e.Protocol, host, e.HostPort, e.Family, e.Holder)
}

// MixedBackendsError refuses a network on one backend while moor networks of the same
// host use the other (code 7): rules of one backend cannot see the bridges of the other,
// so their networks would not be isolated from each other.
type MixedBackendsError struct {
	Network string
	Want    string // the backend this network asked for
	InUse   string // the backend the host's moor networks use
}

func (e *MixedBackendsError) Error() string {
	return fmt.Sprintf("firewall: firewallBackend %q of network %q: moor networks on this host already use the %s backend, "+
		"and networks of the two backends would not be isolated from each other; use %q (or leave firewallBackend empty) "+
		"or remove the %s networks first", e.Want, e.Network, e.InUse, e.InUse, e.InUse)
}

// CNICode implements codes.Coded.
func (e *MixedBackendsError) CNICode() uint { return codes.InvalidNetworkConfig }

// CNICode implements codes.Coded.
func (e *PortInUseError) CNICode() uint { return codes.PortInUse }

// BackendError reports a change or read the kernel or the iptables binary refused
// (code 106).
type BackendError struct {
	Backend string // KindNFTables or KindIPTables
	Op      string // what was being done, naming the object
	Err     error
}

func (e *BackendError) Error() string {
	return fmt.Sprintf("firewall (%s): %s: %v", e.Backend, e.Op, e.Err)
}

// CNICode implements codes.Coded.
func (e *BackendError) CNICode() uint { return codes.FirewallFailure }

// Unwrap exposes the cause.
func (e *BackendError) Unwrap() error { return e.Err }

// MissingRulesError is CHECK's answer: the rules (by label) that should exist and do not
// (code 106).
type MissingRulesError struct {
	Backend string
	Object  string // "network N" or "attachment N/C/I"
	Missing []string
}

func (e *MissingRulesError) Error() string {
	return fmt.Sprintf("firewall (%s): %s: missing %s", e.Backend, e.Object, strings.Join(e.Missing, "; "))
}

// CNICode implements codes.Coded.
func (e *MissingRulesError) CNICode() uint { return codes.FirewallFailure }

// UnavailableError is Status's answer when the backend cannot work here (code 50).
type UnavailableError struct {
	Backend string
	Err     error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("firewall (%s) unavailable: %v", e.Backend, e.Err)
}

// CNICode implements codes.Coded.
func (e *UnavailableError) CNICode() uint { return codes.PluginNotAvailable }

// Unwrap exposes the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// LockTimeoutError reports that Options.LockFile was not obtained in time (code 11).
type LockTimeoutError struct {
	Path string
}

func (e *LockTimeoutError) Error() string {
	return fmt.Sprintf("firewall: timed out waiting for lock %s", e.Path)
}

// CNICode implements codes.Coded.
func (e *LockTimeoutError) CNICode() uint { return codes.TryAgainLater }

// Package codes holds the CNI error codes moor returns: the spec's own (1-11, 50, 51)
// and moor's plugin-specific ones (100 and up), documented in docs/errors.md.
//
// Packages deep inside moor (allocators, stores, firewall backends) do not return CNI
// errors themselves. They return their own typed errors and, where a specific CNI code
// applies, give those types a CNICode method so that the plugin framework can map them
// at the edge (see plugins.ToCNIError). This package has no dependencies so that any
// package can import it without pulling in the framework.
package codes

// Coded is implemented by any error that knows the CNI code it should surface as.
// The framework finds it with errors.As, so wrapping with %w keeps the code.
type Coded interface {
	error
	CNICode() uint
}

// Codes defined by the CNI specification (SPEC.md section "Error").
const (
	IncompatibleCNIVersion uint = 1
	UnsupportedField       uint = 2
	UnknownContainer       uint = 3
	InvalidEnvironment     uint = 4
	IOFailure              uint = 5
	DecodingFailure        uint = 6
	InvalidNetworkConfig   uint = 7
	TryAgainLater          uint = 11
	PluginNotAvailable     uint = 50
	LimitedConnectivity    uint = 51
)

// moor's own codes. Keep docs/errors.md in step when adding one.
const (
	PoolExhausted     uint = 100 // no free address left in the requested pool
	AddressInUse      uint = 101 // a requested address is held by another attachment
	AddressOutOfRange uint = 102 // a requested address lies outside every configured range
	PortInUse         uint = 103 // a published host port is already taken by another attachment
	KernelFeature     uint = 104 // the kernel lacks a module or feature the config needs
	InterfaceConflict uint = 105 // an interface or link exists with other attributes than asked
	FirewallFailure   uint = 106 // the firewall backend refused a change
	DNSServerFailure  uint = 107 // the DNS sidecar could not be started or reached
	StoreFailure      uint = 108 // the state store is corrupt or refused a write
	OverlayNoSubnet   uint = 109 // no host subnet left in the overlay range
	CheckFailed       uint = 110 // CHECK found live state that differs from the result
	NotPermitted      uint = 111 // the kernel refused an operation for lack of privilege (EPERM, EACCES)
	BridgeFull        uint = 112 // a bridge has no free port: the kernel's limit per bridge (EXFULL)
	Internal          uint = 999 // a bug in moor: anything not classified above
)

// Error is a ready-made Coded error for packages that need nothing richer.
type Error struct {
	Code uint
	Msg  string
	Err  error // optional cause
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// CNICode reports the code the error surfaces as.
func (e *Error) CNICode() uint { return e.Code }

// Unwrap exposes the cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// New returns an *Error with the given code and message.
func New(code uint, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Wrap returns an *Error with the given code and message around cause.
func Wrap(code uint, msg string, cause error) *Error { return &Error{Code: code, Msg: msg, Err: cause} }

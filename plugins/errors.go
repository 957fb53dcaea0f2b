package plugins

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/moornet/moor/plugins/codes"
)

// ErrLockTimeout is returned (wrapped) when a lock on shared state was not obtained in
// time. It surfaces as code 11 so that the runtime retries.
var ErrLockTimeout = codes.New(codes.TryAgainLater, "timed out waiting for a lock")

// InvalidField reports a config field with a wrong value: code 7, naming field and value.
func InvalidField(field string, value any, reason string) error {
	return codes.New(codes.InvalidNetworkConfig, fmt.Sprintf("%s %s: %s", field, quote(value), reason))
}

// UnsupportedField reports a field that does not apply here (another backend's option,
// another driver's option): code 2, naming the key and value.
func UnsupportedField(field string, value any, reason string) error {
	return codes.New(codes.UnsupportedField, fmt.Sprintf("unsupported field %s %s: %s", field, quote(value), reason))
}

// InvalidEnv reports a bad or missing CNI_* variable: code 4.
func InvalidEnv(msg string) error { return codes.New(codes.InvalidEnvironment, msg) }

// Errorf builds a coded error with a formatted message; %w in format wraps as usual.
func Errorf(code uint, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &codes.Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

func quote(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case fmt.Stringer:
		return fmt.Sprintf("%q", x.String())
	default:
		return fmt.Sprintf("%v", x)
	}
}

// kernelCodes maps the kernel's answers that reach the edge without a code (netlink and
// sysctl errors wrapped by a driver with %w) to the code that says what they mean; the
// table is in docs/errors.md. An errno not listed here is a bug of moor (999).
var kernelCodes = map[syscall.Errno]uint{
	syscall.EEXIST:          codes.InterfaceConflict, // a link, address or route of that name or key exists
	syscall.EOPNOTSUPP:      codes.KernelFeature,     // the kernel lacks the link kind, attribute or module
	syscall.EPROTONOSUPPORT: codes.KernelFeature,
	syscall.EAFNOSUPPORT:    codes.KernelFeature, // e.g. IPv6 disabled
	syscall.ENODEV:          codes.TryAgainLater, // a link the call used vanished while it ran
	syscall.EBUSY:           codes.TryAgainLater,
	syscall.EAGAIN:          codes.TryAgainLater,
	syscall.EINTR:           codes.TryAgainLater,
	syscall.EPERM:           codes.NotPermitted, // no CAP_NET_ADMIN (rootless, a user namespace)
	syscall.EACCES:          codes.NotPermitted,
	syscall.EROFS:           codes.NotPermitted, // a read-only /proc/sys
	// EXFULL ("exchange full") is the bridge's answer when it has no free port number
	// (link/bridge.MaxPorts); no other request moor makes is known to get it. The drivers'
	// attachment step names the bridge and the network (bridge.FullError, the same code);
	// any other step that puts a link on a full bridge gets the code here.
	syscall.EXFULL: codes.BridgeFull,
}

// ToCNIError maps any error to the CNI error object printed at the edge. Errors that
// carry a code (codes.Coded, *types.Error) keep it; a kernel errno found in the chain
// takes its kernelCodes code; a context deadline becomes 11 (try again later); anything
// else is a bug and becomes 999.
func ToCNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	// The outermost code wins: a STATUS wrapping an IPAM error as 50 stays 50.
	for e := err; e != nil; e = errors.Unwrap(e) {
		if te, ok := e.(*types.Error); ok {
			return te
		}
		if coded, ok := e.(codes.Coded); ok {
			return types.NewError(coded.CNICode(), err.Error(), "")
		}
	}
	// Joined errors (DEL, GC) have no single chain: take the first code found.
	var te *types.Error
	if errors.As(err, &te) {
		return types.NewError(te.Code, err.Error(), te.Details)
	}
	var coded codes.Coded
	if errors.As(err, &coded) {
		return types.NewError(coded.CNICode(), err.Error(), "")
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if code, ok := kernelCodes[errno]; ok {
			return types.NewError(code, err.Error(), "")
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(codes.TryAgainLater, err.Error(), "")
	}
	return types.NewError(codes.Internal, err.Error(), "")
}

package lease

import (
	"context"
	"errors"
	"fmt"

	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moornet/moor/plugins/codes"
)

// UnavailableError: etcd did not answer in time, has no leader or refused the connection.
// CNI code 11 (try again later).
type UnavailableError struct {
	Op  string
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("overlay store unavailable: %s: %v", e.Op, e.Err)
}

// Unwrap exposes the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// CNICode implements codes.Coded.
func (e *UnavailableError) CNICode() uint { return codes.TryAgainLater }

// NoSubnetError: every host subnet of the range is leased. CNI code 109.
type NoSubnetError struct {
	Range         string
	HostSubnetLen int
	Leased        int
}

func (e *NoSubnetError) Error() string {
	return fmt.Sprintf("overlay range %s: all %d host subnets of length /%d are leased", e.Range, e.Leased, e.HostSubnetLen)
}

// CNICode implements codes.Coded.
func (e *NoSubnetError) CNICode() uint { return codes.OverlayNoSubnet }

// MismatchError: the network is already registered in the store with other parameters
// (another host's config differs). CNI code 7.
type MismatchError struct {
	Network string
	Field   string
	Stored  string
	Config  string
	// Hint, when set, says which config field decides Field.
	Hint string
}

func (e *MismatchError) Error() string {
	msg := fmt.Sprintf("overlay network %q: %s is %s in the store but %s in this config; every host must use the same", e.Network, e.Field, e.Stored, e.Config)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// CNICode implements codes.Coded.
func (e *MismatchError) CNICode() uint { return codes.InvalidNetworkConfig }

// StaleError: a lease changed in the store since it was read (Publish). CNI code 11: the
// caller reads it again.
type StaleError struct {
	Key      string
	Revision int64
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("overlay store: %s changed since revision %d", e.Key, e.Revision)
}

// CNICode implements codes.Coded.
func (e *StaleError) CNICode() uint { return codes.TryAgainLater }

// StoreError: etcd answered with an error, or a stored value cannot be decoded. CNI code 108.
type StoreError struct {
	Op  string
	Err error
}

func (e *StoreError) Error() string { return fmt.Sprintf("overlay store: %s: %v", e.Op, e.Err) }

// Unwrap exposes the cause.
func (e *StoreError) Unwrap() error { return e.Err }

// CNICode implements codes.Coded.
func (e *StoreError) CNICode() uint { return codes.StoreFailure }

// classify turns an etcd client error into *UnavailableError or *StoreError.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &UnavailableError{Op: op, Err: err}
	}
	switch status.Code(err) {
	case grpccodes.Unavailable, grpccodes.DeadlineExceeded, grpccodes.Canceled:
		return &UnavailableError{Op: op, Err: err}
	}
	var coded interface{ Code() grpccodes.Code }
	if errors.As(err, &coded) {
		switch coded.Code() {
		case grpccodes.Unavailable, grpccodes.DeadlineExceeded, grpccodes.Canceled:
			return &UnavailableError{Op: op, Err: err}
		}
	}
	return &StoreError{Op: op, Err: err}
}

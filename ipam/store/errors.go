package store

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/moornet/moor/plugins/codes"
)

// ErrNotFound is wrapped by Get when the key holds no addresses.
var ErrNotFound = errors.New("no addresses reserved")

// InUseError: an address asked for is held by another attachment (code 101).
type InUseError struct {
	Addr  netip.Addr
	Owner Key
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("address %s is already held by %s", e.Addr, e.Owner)
}

// CNICode is codes.AddressInUse.
func (e *InUseError) CNICode() uint { return codes.AddressInUse }

// OutOfRangeError: an address asked for lies outside every range of the pool, or is
// one of the addresses a range never hands out (code 102).
type OutOfRangeError struct {
	Addr   netip.Addr
	Pool   string // the ranges looked in, for the message
	Reason string // optional detail, e.g. "is the gateway"
}

func (e *OutOfRangeError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("requested address %s %s", e.Addr, e.Reason)
	}
	return fmt.Sprintf("requested address %s lies outside every range (%s)", e.Addr, e.Pool)
}

// CNICode is codes.AddressOutOfRange.
func (e *OutOfRangeError) CNICode() uint { return codes.AddressOutOfRange }

// ExhaustedError: a pool has no free address left (code 100).
type ExhaustedError struct {
	Pool  string
	InUse Count
	Size  Count
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("pool %s: %s of %s addresses in use", e.Pool, e.InUse, e.Size)
}

// CNICode is codes.PoolExhausted.
func (e *ExhaustedError) CNICode() uint { return codes.PoolExhausted }

// UnavailableError: the store could not be reached or locked in time (code 11, try
// again later).
type UnavailableError struct {
	Store string // e.g. "local /var/lib/moor/ipam/net1.db"
	Err   error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("ipam store %s unavailable: %v", e.Store, e.Err)
}

// CNICode is codes.TryAgainLater.
func (e *UnavailableError) CNICode() uint { return codes.TryAgainLater }

func (e *UnavailableError) Unwrap() error { return e.Err }

// Error: the store refused an operation or holds data it cannot read (code 108).
type Error struct {
	Store string
	Op    string
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("ipam store %s: %s: %v", e.Store, e.Op, e.Err)
}

// CNICode is codes.StoreFailure.
func (e *Error) CNICode() uint { return codes.StoreFailure }

func (e *Error) Unwrap() error { return e.Err }

// InvalidKeyError: a container ID or interface name cannot be stored (code 4: they come
// from CNI_CONTAINERID and CNI_IFNAME).
type InvalidKeyError struct {
	Key    Key
	Reason string
}

func (e *InvalidKeyError) Error() string {
	return fmt.Sprintf("attachment %q/%q: %s", e.Key.ContainerID, e.Key.IfName, e.Reason)
}

// CNICode is codes.InvalidEnvironment.
func (e *InvalidKeyError) CNICode() uint { return codes.InvalidEnvironment }

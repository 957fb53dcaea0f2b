package allocator

import (
	"errors"
	"fmt"

	"github.com/moornet/moor/ipam/store"
	"github.com/moornet/moor/plugins/codes"
)

// CheckError: CHECK found that the attachment's addresses are not (all) reserved for it.
type CheckError struct {
	Key    store.Key
	Reason string
}

func (e *CheckError) Error() string { return fmt.Sprintf("ipam check of %s: %s", e.Key, e.Reason) }

// CNICode is codes.CheckFailed.
func (e *CheckError) CNICode() uint { return codes.CheckFailed }

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

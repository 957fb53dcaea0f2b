package firewall

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moornet/moor/plugins/flock"
)

// hostLock takes the host-wide exclusive lock at path, waiting up to timeout, and returns
// the function that releases it.
func hostLock(path string, timeout time.Duration) (func(), error) {
	release, err := flock.Lock(context.Background(), path, flock.Options{Timeout: timeout})
	if errors.Is(err, flock.ErrTimeout) {
		return nil, &LockTimeoutError{Path: path}
	}
	if err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	return release, nil
}

package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

var errLockTimeout = errors.New("lock not obtained in time")

// lockFile takes a flock on path (exclusive, or shared for readers), waiting at most
// timeout or until ctx ends. The returned function releases it. A reader whose lock file
// does not exist gets an error wrapping fs.ErrNotExist (nothing has been written yet).
func lockFile(ctx context.Context, path string, exclusive bool, timeout time.Duration) (func(), error) {
	flags, how := os.O_RDWR|os.O_CREATE, unix.LOCK_EX
	if !exclusive {
		flags, how = os.O_RDONLY, unix.LOCK_SH
	}
	f, err := os.OpenFile(path, flags|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	release := func() { _ = f.Close() } // closing the last descriptor drops the flock
	if err := unix.Flock(fd, how|unix.LOCK_NB); err == nil {
		return release, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		release()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	// Contended: block in the kernel on a separate goroutine so that the lock is taken
	// the moment it is free, and give up after timeout. An abandoned attempt releases the
	// lock as soon as it gets it.
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, how)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			release()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		return release, nil
	case <-timer.C:
		go func() { <-done; release() }()
		return nil, fmt.Errorf("%w: %s held by another process for more than %s", errLockTimeout, path, timeout)
	case <-ctx.Done():
		go func() { <-done; release() }()
		return nil, ctx.Err()
	}
}

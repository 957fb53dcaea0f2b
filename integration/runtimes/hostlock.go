package runtimes

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// HostLockPath serialises the test packages that work in the machine's own network
// namespace (real runtimes do: podman, containerd, cnitool), so that no package sees
// another's links, rules and namespaces in its before/after comparison of the host.
// Every such package holds an exclusive flock on it for its whole run (LockHost). The
// file stays (a lock file must not be removed while others may wait on it); /run/lock is
// a tmpfs.
const HostLockPath = "/run/lock/moor-host-netns.lock"

const (
	lockFileMode = 0o644
	lockRetry    = time.Second
)

// LockHost takes HostLockPath, waiting up to wait and saying once on w that it waits. The
// returned func releases it.
func LockHost(wait time.Duration, w io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(HostLockPath, os.O_RDWR|os.O_CREATE, lockFileMode)
	if err != nil {
		return nil, fmt.Errorf("host lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for waited := false; ; waited = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("host lock %s (waited %s): %w", HostLockPath, wait, err)
		}
		if !waited {
			fmt.Fprintf(w, "waiting for %s: another package is testing in the host's network namespace\n", HostLockPath)
		}
		time.Sleep(lockRetry)
	}
}

package server

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// stopPoll is how often Stop looks whether the pid file's lock was released.
const stopPoll = 20 * time.Millisecond

// Stop ends the server holding pidFile's lock: SIGTERM to the pid written in it, then a
// wait of at most wait for the lock to be released (the server removes its socket and pid
// file first). It returns the pid it signalled, 0 when no server held the lock. A server
// still holding the lock after wait is an error; Stop never sends SIGKILL, so that a pid
// file never makes it kill anything.
func Stop(pidFile string, wait time.Duration) (int, error) {
	pid, ok := Running(pidFile)
	if !ok {
		return 0, nil
	}
	if pid <= 0 {
		return 0, fmt.Errorf("the pid file %s is locked but names no process", pidFile)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return pid, fmt.Errorf("stopping the DNS sidecar %d: %w", pid, err)
	}
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(stopPoll) {
		if _, running := Running(pidFile); !running {
			return pid, nil
		}
	}
	return pid, fmt.Errorf("the DNS sidecar %d did not stop within %s", pid, wait)
}

// Package flock takes advisory file locks (flock(2)) with a bounded wait: the one lock
// helper of moor, for the IPAM store, the firewall and shared links. A lock is held by an
// open file description; closing it (the release function) drops the lock, and so does
// the process's death, so a crashed plugin never leaves a lock behind.
//
// Lock files are state files: they are opened through package statefs (no symbolic link
// followed, the directory owned by root and writable by nobody else; a refusal is a
// *statefs.UnsafeError, code 7). Callers turn ErrTimeout into their own typed error
// (usually CNI code 11, "try again later").
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/statefs"
)

// ErrTimeout is wrapped by Lock's error when the lock was not obtained in time.
var ErrTimeout = errors.New("lock not obtained in time")

// Modes of the lock file and of the directories Lock creates.
const (
	FileMode = 0o600
	DirMode  = 0o700
)

// Options tune one Lock call.
type Options struct {
	Shared  bool          // a reader's shared lock instead of an exclusive one
	Timeout time.Duration // longest wait for a held lock
	// NoCreate opens an existing lock file only (a reader of state nobody wrote yet gets
	// an error wrapping fs.ErrNotExist); by default the file and its directory are made.
	NoCreate bool
}

// Lock takes the lock on path, waiting at most opts.Timeout or until ctx ends, and returns
// the function that releases it. The wait blocks in the kernel on a helper goroutine, so
// the lock is taken the moment it is free; an abandoned attempt releases the lock as soon
// as it gets it.
//
// A lock file may be removed by its holder (a store destroying its state): whoever
// obtains the lock on a file that is no longer at path starts over with the file now
// there, so two processes never hold "the" lock on two different files.
func Lock(ctx context.Context, path string, opts Options) (func(), error) {
	deadline := time.Now().Add(opts.Timeout)
	for {
		release, f, err := lockOnce(ctx, path, opts)
		if err != nil {
			return nil, err
		}
		if stillAt(f, path) {
			return release, nil
		}
		release()
		if opts.Timeout = time.Until(deadline); opts.Timeout <= 0 {
			return nil, fmt.Errorf("%w: %s kept changing", ErrTimeout, path)
		}
	}
}

// stillAt reports whether the open file f is the file at path.
func stillAt(f *os.File, path string) bool {
	var fst, pst unix.Stat_t
	return unix.Fstat(int(f.Fd()), &fst) == nil && unix.Lstat(path, &pst) == nil &&
		fst.Dev == pst.Dev && fst.Ino == pst.Ino
}

// lockOnce opens path and takes the lock on it.
func lockOnce(ctx context.Context, path string, opts Options) (func(), *os.File, error) {
	flags, how := os.O_RDWR|os.O_CREATE, unix.LOCK_EX
	if opts.Shared {
		how = unix.LOCK_SH
	}
	if opts.NoCreate {
		flags = os.O_RDONLY
	} else if err := statefs.MkdirAll(filepath.Dir(path), DirMode); err != nil {
		return nil, nil, fmt.Errorf("lock directory of %s: %w", path, err)
	}
	f, err := statefs.OpenFile(path, flags, FileMode)
	if err != nil {
		return nil, nil, err
	}
	fd := int(f.Fd())
	release := func() { _ = f.Close() }
	if err := unix.Flock(fd, how|unix.LOCK_NB); err == nil {
		return release, f, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		release()
		return nil, nil, fmt.Errorf("flock %s: %w", path, err)
	}
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
	timer := time.NewTimer(opts.Timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("flock %s: %w", path, err)
		}
		return release, f, nil
	case <-timer.C:
		go func() { <-done; release() }()
		return nil, nil, fmt.Errorf("%w: %s held by another process for more than %s", ErrTimeout, path, opts.Timeout)
	case <-ctx.Done():
		go func() { <-done; release() }()
		return nil, nil, ctx.Err()
	}
}

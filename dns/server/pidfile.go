package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/statefs"
)

// AlreadyRunningError reports that another instance holds the pid file's lock.
type AlreadyRunningError struct {
	PidFile string
	PID     int // 0 when unknown
}

func (e *AlreadyRunningError) Error() string {
	return fmt.Sprintf("dns server already running (pid %d, lock %s)", e.PID, e.PidFile)
}

// CNICode maps the error to "try again later": the running instance serves the records.
func (e *AlreadyRunningError) CNICode() uint { return codes.TryAgainLater }

type pidLock struct {
	f    *os.File
	path string
}

// lockPidFile takes an exclusive, non-blocking flock on path and writes our pid into it.
func lockPidFile(path string) (*pidLock, error) {
	if err := statefs.MkdirAll(filepath.Dir(path), runDirMode); err != nil {
		return nil, &StartError{Step: "pid file", Err: err}
	}
	for {
		f, err := statefs.OpenFile(path, os.O_RDWR|os.O_CREATE, socketMode)
		if err != nil {
			return nil, &StartError{Step: "pid file", Err: err}
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			pid := readPid(f)
			_ = f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &AlreadyRunningError{PidFile: path, PID: pid}
			}
			return nil, &StartError{Step: "lock pid file", Err: err}
		}
		// The previous owner may have removed the file between our open and our lock;
		// then we locked an orphan inode and must start over.
		var fst, pst unix.Stat_t
		if unix.Fstat(int(f.Fd()), &fst) != nil || unix.Stat(path, &pst) != nil || fst.Ino != pst.Ino || fst.Dev != pst.Dev {
			_ = f.Close()
			continue
		}
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			if err != nil {
				_ = f.Close()
				return nil, &StartError{Step: "write pid file", Err: err}
			}
		}
		return &pidLock{f: f, path: path}, nil
	}
}

// release removes the pid file, then drops the lock (in that order, see lockPidFile).
func (p *pidLock) release() {
	_ = os.Remove(p.path)
	_ = p.f.Close()
}

func readPid(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	return pid
}

// Running reports whether a server holds the lock of pidFile (DefaultPidFile when empty),
// and its pid when known.
func Running(pidFile string) (int, bool) {
	if pidFile == "" {
		pidFile = DefaultPidFile
	}
	f, err := os.Open(pidFile)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, false
	}
	return readPid(f), true
}

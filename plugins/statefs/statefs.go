// Package statefs opens moor's state files and directories safely: the one helper behind
// every path where moor keeps state (the IPAM database and its locks, the DNS records,
// pid file and socket directory, the firewall and link locks, the netavark state).
//
// The rules, and why:
//   - The last component of a state path is never followed when it is a symbolic link:
//     files are opened with O_NOFOLLOW, directories are checked with lstat. A link
//     planted there by someone who could write the directory would otherwise make moor
//     write (or truncate) a file of the link's choosing.
//   - A state directory must be a real directory owned by the user moor runs as (root on
//     a host) or by root, and not writable by group or others; its ancestors must be
//     owned likewise and not writable by group or others unless sticky (like /tmp). A
//     directory someone else can write lets them plant files and links in it.
//   - A state file must be a regular file owned by the same user.
//   - The ancestors of a state directory may be symbolic links (/var/run -> /run): the
//     path is configured by root, who is trusted.
//
// A path that breaks a rule is refused with *UnsafeError, which carries CNI code 7
// (invalid network configuration: the config or the host's layout points state at an
// unsafe place) and names the path. The package is a leaf: it imports only the code list.
//
// What it does not do: protect against root, or against a race with someone who can
// already write the directory (such a directory is refused before anything is opened).
package statefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// UnsafeError reports a state path refused by the rules above (code 7).
type UnsafeError struct {
	Path   string
	Reason string
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("unsafe state path %q: %s", e.Path, e.Reason)
}

// CNICode is codes.InvalidNetworkConfig.
func (e *UnsafeError) CNICode() uint { return codes.InvalidNetworkConfig }

// MkdirAll creates dir and its missing parents with perm, then checks dir with CheckDir.
func MkdirAll(dir string, perm fs.FileMode) error {
	if fi, err := os.Lstat(dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return &UnsafeError{Path: dir, Reason: "is a symbolic link"}
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	return CheckDir(dir)
}

// Mkdir creates dir (not its parents) with perm unless it exists, then checks it with
// CheckDir.
func Mkdir(dir string, perm fs.FileMode) error {
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return CheckDir(dir)
}

// CheckDir returns nil when dir is a safe state directory (see the package doc), an
// *UnsafeError when it is not, and the lstat error (fs.ErrNotExist, ...) when it cannot
// be looked at.
//
// A directory found safe is remembered for checkedFor: a plugin's invocation checks the
// same few directories several times (the IPAM store's, its lock's, the firewall lock's),
// and only root or the directory's owner could make a safe directory unsafe meanwhile.
func CheckDir(dir string) error {
	if t, ok := checked.Load(dir); ok && time.Since(t.(time.Time)) < checkedFor {
		return nil
	}
	if err := checkDir(dir); err != nil {
		return err
	}
	checked.Store(dir, time.Now())
	return nil
}

// checked maps a directory CheckDir found safe to when; see CheckDir.
var checked sync.Map // string -> time.Time

// checkedFor is how long a CheckDir verdict is reused: the length of an invocation, and
// short enough for a long-lived process to see a mode changed later.
const checkedFor = time.Second

func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return &UnsafeError{Path: dir, Reason: "is a symbolic link"}
	}
	if !fi.IsDir() {
		return &UnsafeError{Path: dir, Reason: "is not a directory"}
	}
	if err := checkOwner(dir, fi, false); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return err
	}
	for p := filepath.Dir(real); ; p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if err := checkOwner(p, fi, true); err != nil {
			return err
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// checkOwner applies the owner and mode rules to one directory.
func checkOwner(path string, fi fs.FileInfo, ancestor bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &UnsafeError{Path: path, Reason: "cannot read its owner"}
	}
	if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
		return &UnsafeError{Path: path, Reason: fmt.Sprintf("is owned by uid %d, not by root", uid)}
	}
	if fi.Mode().Perm()&0o022 != 0 && !(ancestor && fi.Mode()&fs.ModeSticky != 0) {
		return &UnsafeError{Path: path, Reason: fmt.Sprintf("is writable by group or others (mode %04o)", fi.Mode().Perm())}
	}
	return nil
}

// OpenFile opens the state file path like os.OpenFile, after checking its directory
// with CheckDir, without following a symbolic link in its last component, and refuses
// (closing it) anything but a regular file owned by root or the running user.
func OpenFile(path string, flag int, perm fs.FileMode) (*os.File, error) {
	if err := CheckDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if errors.Is(err, unix.ELOOP) {
		return nil, &UnsafeError{Path: path, Reason: "is a symbolic link"}
	}
	if err != nil {
		return nil, err
	}
	if err := CheckFile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// CheckFile refuses an open file that is not a regular file owned by root or the
// running user.
func CheckFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &UnsafeError{Path: f.Name(), Reason: "is not a regular file"}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &UnsafeError{Path: f.Name(), Reason: "cannot read its owner"}
	}
	if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
		return &UnsafeError{Path: f.Name(), Reason: fmt.Sprintf("is owned by uid %d, not by root", uid)}
	}
	return nil
}

// CheckPath checks a state path before another process opens it: its directory with
// CheckDir, and its last component is not a symbolic link. A path (or directory) that
// does not exist yet is fine: whoever creates it goes through this package.
func CheckPath(path string) error {
	err := CheckDir(filepath.Dir(path))
	if err == nil {
		var fi fs.FileInfo
		if fi, err = os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return &UnsafeError{Path: path, Reason: "is a symbolic link"}
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// EnvRunDir, when set in a plugin's or daemon's environment, moves every volatile state
// path of moor (locks, the DNS sidecar's records, socket and pid file, the netavark
// state) under that directory, so that one machine can host several independent
// "hosts" (labs, tests), each with its own state.
const EnvRunDir = "MOOR_RUN_DIR"

// DefaultRunDir is the volatile state directory when EnvRunDir is not set.
const DefaultRunDir = "/run/moor"

// RunDir returns $MOOR_RUN_DIR from getenv (os.Getenv when nil), else DefaultRunDir.
func RunDir(getenv func(string) string) string {
	if getenv == nil {
		getenv = os.Getenv
	}
	if dir := getenv(EnvRunDir); dir != "" {
		return dir
	}
	return DefaultRunDir
}

package server

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
)

// capLastCapFile tells the highest capability number the kernel knows.
const capLastCapFile = "/proc/sys/kernel/cap_last_cap"

// capWords is the number of 32-bit words of a version 3 capability set.
const capWords = 2

// PrivilegeError reports that capabilities could not be dropped.
type PrivilegeError struct {
	Step string
	Err  error
}

func (e *PrivilegeError) Error() string { return "drop privileges: " + e.Step + ": " + e.Err.Error() }

// Unwrap exposes the cause.
func (e *PrivilegeError) Unwrap() error { return e.Err }

// CNICode maps the error to "DNS server failure".
func (e *PrivilegeError) CNICode() uint { return codes.DNSServerFailure }

// ErrCgoThreads is wrapped by DropPrivileges' error in binaries built with cgo: Linux keeps
// capabilities per thread and Go can only change every thread of a pure-Go binary.
var ErrCgoThreads = errors.New("capabilities cannot be changed on every thread of a cgo binary; build with CGO_ENABLED=0")

// Retain is what DropPrivileges keeps beyond CAP_NET_BIND_SERVICE: the firewall repair's
// needs (see FirewallRetain and the package doc).
type Retain struct {
	// Caps are further capabilities kept in the effective, permitted and bounding sets.
	Caps []uintptr
	// Exec keeps execve allowed by the seccomp filter and makes Caps ambient, so that a
	// program run by the server (iptables) has them too.
	Exec bool
}

// DropPrivileges makes the process an unprivileged one that can still bind port 53 on
// gateways of networks created later, on every thread: it empties the bounding and ambient
// sets except for CAP_NET_BIND_SERVICE and keep.Caps, drops supplementary groups, switches
// to gid and uid (keeping those capabilities across the switch with PR_SET_KEEPCAPS), sets
// permitted and effective to them alone and inheritable to nothing (to keep.Caps with
// keep.Exec, which also raises them as ambient), sets no_new_privs so that nothing exec'd
// later could gain more, and loads the seccomp filter (installSeccomp). It reports whether
// a seccomp filter was loaded (none on architectures without one).
//
// The records stay readable because the store gives the sidecar's group read access
// (records.GrantRead) and the server reads them relative to its working directory; see the
// package doc.
//
// It needs a binary built with CGO_ENABLED=0 (otherwise the error wraps ErrCgoThreads) and
// cannot be undone.
func DropPrivileges(uid, gid int, keep Retain) (seccomp bool, err error) {
	if uid <= 0 || gid <= 0 {
		return false, &PrivilegeError{Step: "check ids", Err: fmt.Errorf("uid %d, gid %d: must not be root", uid, gid)}
	}
	last, err := lastCap()
	if err != nil {
		return false, &PrivilegeError{Step: "read " + capLastCapFile, Err: err}
	}
	kept := map[int]bool{unix.CAP_NET_BIND_SERVICE: true}
	for _, c := range keep.Caps {
		kept[int(c)] = true
	}
	// Bounding set first: dropping from it needs CAP_SETPCAP, which the switch removes.
	for c := 0; c <= last; c++ {
		if kept[c] {
			continue
		}
		if err := allThreads(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); err != nil {
			return false, &PrivilegeError{Step: fmt.Sprintf("drop capability %d from the bounding set", c), Err: err}
		}
	}
	steps := []struct {
		name       string
		trap       uintptr
		a1, a2, a3 uintptr
	}{
		{"clear ambient capabilities", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0},
		{"keep capabilities across the uid switch", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0},
		{"drop supplementary groups", unix.SYS_SETGROUPS, 0, 0, 0},
		{fmt.Sprintf("switch to gid %d", gid), unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)},
		{fmt.Sprintf("switch to uid %d", uid), unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)},
	}
	for _, st := range steps {
		if err := allThreads(st.trap, st.a1, st.a2, st.a3); err != nil {
			return false, &PrivilegeError{Step: st.name, Err: err}
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [capWords]unix.CapUserData
	for c := range kept {
		bit := uint32(1) << (c % 32)
		data[c/32].Effective |= bit
		data[c/32].Permitted |= bit
		if keep.Exec && c != unix.CAP_NET_BIND_SERVICE {
			data[c/32].Inheritable |= bit
		}
	}
	if err := allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); err != nil {
		return false, &PrivilegeError{Step: "capset", Err: err}
	}
	if keep.Exec {
		for _, c := range keep.Caps {
			if err := allThreads(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c); err != nil {
				return false, &PrivilegeError{Step: fmt.Sprintf("raise ambient capability %d", c), Err: err}
			}
		}
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0); err != nil {
		return false, &PrivilegeError{Step: "clear keep-capabilities", Err: err}
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return false, &PrivilegeError{Step: "set no_new_privs", Err: err}
	}
	seccomp, err = installSeccomp(keep.Exec)
	if err != nil {
		return seccomp, &PrivilegeError{Step: "load seccomp filter", Err: err}
	}
	return seccomp, nil
}

func allThreads(trap, a1, a2, a3 uintptr) error {
	_, _, errno := syscall.AllThreadsSyscall(trap, a1, a2, a3)
	switch errno {
	case 0:
		return nil
	case syscall.ENOTSUP:
		return ErrCgoThreads
	}
	return errno
}

func lastCap() (int, error) {
	data, err := os.ReadFile(capLastCapFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

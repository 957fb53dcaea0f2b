//go:build linux

package server

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The filter denies execve and execveat unless the firewall repair needs exec (iptables):
// Retain.Exec leaves them out, and nothing else.
func TestSeccompExecOnlyWhenRetained(t *testing.T) {
	if _, _, ok := seccompArch(); !ok {
		t.Skip("no seccomp filter on this architecture")
	}
	denies := func(prog []unix.SockFilter, nr uintptr) bool {
		for _, ins := range prog {
			if ins.Code == unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K && ins.K == uint32(nr) {
				return true
			}
		}
		return false
	}
	strict, withExec := seccompProgram(false), seccompProgram(true)
	for _, nr := range []uintptr{unix.SYS_EXECVE, unix.SYS_EXECVEAT} {
		if !denies(strict, nr) || denies(withExec, nr) {
			t.Errorf("syscall %d: denied %v without exec, %v with exec; want true, false", nr, denies(strict, nr), denies(withExec, nr))
		}
	}
	for _, nr := range []uintptr{unix.SYS_PTRACE, unix.SYS_SETNS, unix.SYS_MOUNT, unix.SYS_BPF, unix.SYS_SETUID} {
		if !denies(withExec, nr) {
			t.Errorf("syscall %d allowed with exec: only execve and execveat may be", nr)
		}
	}
	if len(strict)-len(withExec) != 4 { // two instructions per denied call
		t.Errorf("the filters differ by %d instructions, want 4", len(strict)-len(withExec))
	}
}

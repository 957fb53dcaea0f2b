package server

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The seccomp filter is a deny list, not an allow list. The server is a Go program: which
// system calls the runtime makes changes between Go versions and architectures (new
// memory, signal and scheduling calls appear), and an allow list that misses one kills
// the sidecar on some host in the middle of a query. A deny list of calls the server never
// makes cannot break it, and it still removes the kernel surface an attacker who took over
// the process would reach for: running programs (execve), other processes' memory
// (ptrace, process_vm_*), namespaces and mounts (unshare, setns, clone with CLONE_NEW*,
// mount and the new mount API), kernel extension points (bpf, perf_event_open, modules,
// kexec, io_uring, userfaultfd, keyrings), changes of identity (set*id, setgroups,
// capset) and host-wide settings (clock, hostname, swap, reboot). Denied calls fail with
// EPERM (clone3 with ENOSYS, so that a caller falls back to clone, whose flags the filter
// can see). A call from another architecture's ABI kills the process; on amd64 the x32 ABI
// is denied too. Architectures other than amd64 and arm64 get no filter (seccompArch
// reports none) and the server says so in its log.

// deniedSyscalls are refused with EPERM on every supported architecture.
var deniedSyscalls = []uintptr{
	unix.SYS_EXECVE, unix.SYS_EXECVEAT,
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV, unix.SYS_PIDFD_GETFD,
	unix.SYS_UNSHARE, unix.SYS_SETNS,
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT,
	unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_SETUID, unix.SYS_SETGID, unix.SYS_SETREUID, unix.SYS_SETREGID, unix.SYS_SETRESUID,
	unix.SYS_SETRESGID, unix.SYS_SETGROUPS, unix.SYS_SETFSUID, unix.SYS_SETFSGID, unix.SYS_CAPSET,
	unix.SYS_REBOOT, unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_ACCT, unix.SYS_QUOTACTL,
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME, unix.SYS_VHANGUP,
}

// cloneNamespaces are the clone flags that make new namespaces.
const cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// Offsets into struct seccomp_data.
const (
	seccompNrOff   = 0
	seccompArchOff = 4
	seccompArg0Off = 16 // the low half of args[0] on little-endian machines (amd64, arm64)
)

func bpfStmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func bpfJump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// execSyscalls are left out of the deny list for a server that runs iptables to repair
// the firewall (Retain.Exec).
var execSyscalls = map[uintptr]bool{unix.SYS_EXECVE: true, unix.SYS_EXECVEAT: true}

// seccompProgram builds the filter for the running architecture, or nil when there is
// none; allowExec leaves execve and execveat allowed.
func seccompProgram(allowExec bool) []unix.SockFilter {
	arch, extra, ok := seccompArch()
	if !ok {
		return nil
	}
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		jset  = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
	)
	eperm := bpfStmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM))
	prog := []unix.SockFilter{
		bpfStmt(ldAbs, seccompArchOff),
		bpfJump(jeq, arch, 1, 0),
		bpfStmt(ret, unix.SECCOMP_RET_KILL_PROCESS),
		bpfStmt(ldAbs, seccompNrOff),
	}
	if extra.abiFloor != 0 { // another ABI sharing the architecture number (x32)
		prog = append(prog, bpfJump(jge, extra.abiFloor, 0, 1), eperm)
	}
	for _, nr := range append(deniedSyscalls, extra.denied...) {
		if allowExec && execSyscalls[nr] {
			continue
		}
		prog = append(prog, bpfJump(jeq, uint32(nr), 0, 1), eperm)
	}
	prog = append(prog,
		bpfJump(jeq, unix.SYS_CLONE3, 0, 1),
		bpfStmt(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS)),
		bpfJump(jeq, unix.SYS_CLONE, 0, 3),
		bpfStmt(ldAbs, seccompArg0Off),
		bpfJump(jset, cloneNamespaces, 0, 1),
		eperm,
		bpfStmt(ret, unix.SECCOMP_RET_ALLOW),
	)
	return prog
}

// archFilter holds what one architecture adds to the filter.
type archFilter struct {
	abiFloor uint32    // syscall numbers from here on belong to another ABI (0: none)
	denied   []uintptr // architecture-only calls to deny
}

// installSeccomp loads the filter on every thread of the process (SECCOMP_FILTER_FLAG_TSYNC;
// threads started later inherit it). It needs no_new_privs, which DropPrivileges sets first.
// It reports false when the architecture has no filter.
func installSeccomp(allowExec bool) (bool, error) {
	prog := seccompProgram(allowExec)
	if prog == nil {
		return false, nil
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return true, errno
	}
	return true, nil
}

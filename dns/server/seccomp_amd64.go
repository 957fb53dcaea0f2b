package server

import "golang.org/x/sys/unix"

// x32Floor is where the x32 ABI's syscall numbers start (__X32_SYSCALL_BIT).
const x32Floor = 0x40000000

func seccompArch() (uint32, archFilter, bool) {
	return unix.AUDIT_ARCH_X86_64, archFilter{abiFloor: x32Floor, denied: []uintptr{unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_USELIB}}, true
}
